"""A log writer process for concurrency tests: appends entries while running its own sequencer.

``python -m tests.support.log_worker URL LABEL COUNT`` appends COUNT entries, each in its own
transaction, while a background sequencer of this process integrates every few milliseconds,
competing with the other process's sequencer for the same tree.
"""

from __future__ import annotations

import sys

from registry.log.sequencer import Sequencer, SequencerRunner
from registry.log.storage import append_entry
from services.storage.database import Database, DatabaseConfig
from tests.support.logdata import ORIGIN, audit, log_signer


def main(argv: list[str]) -> int:
    url, label, count = argv[0], argv[1], int(argv[2])
    db = Database(DatabaseConfig(url))
    sequencer = Sequencer(db.engine, log_signer(), ORIGIN, batch_size=64, transact=db.write)
    runner = SequencerRunner(sequencer, interval=0.005)
    runner.start()
    try:
        for number in range(count):
            entry = audit(number, label)
            db.write(lambda conn, entry=entry: append_entry(conn, entry))
    finally:
        runner.stop()
        db.dispose()
    if runner.failures:
        print(f"sequencer failed {runner.failures} times: {runner.last_error!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
