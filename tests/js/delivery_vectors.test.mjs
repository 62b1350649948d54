// The JavaScript offline verifier (services/http/static/courier/verifier.mjs, the code the
// courier page loads) against the shared vectors in tests/vectors/delivery/: the same verdict as
// the Python verifier on every one (tests/unit/registry/delivery/test_delivery_vectors.py).
// Run with `node --test tests/js/` (`make test` does).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const courier = path.join(repo, "services/http/static/courier");
// The vendored browser builds define globals, as <script> tags would in the page.
for (const script of ["Reflect.js", "x509.js", "argon2.umd.min.js"]) {
  vm.runInThisContext(fs.readFileSync(path.join(courier, "vendor", script), "utf8"), { filename: script });
}
const asn1js = await import(path.join(courier, "vendor/node_modules/asn1js/build/index.js"));
const { openBundle, Reason, InvalidDocumentError } = await import(path.join(courier, "verifier.mjs"));

const vectors = path.join(repo, "tests/vectors/delivery");
const document = JSON.parse(fs.readFileSync(path.join(vectors, "vectors.json"), "utf8"));
const bundleJson = fs.readFileSync(path.join(vectors, document.bundle), "utf8");
const deps = { x509: globalThis.x509, asn1js, argon2id: globalThis.hashwasm.argon2id, crypto: globalThis.crypto };
const pins = { rootSha256: document.pins.root_sha256, logKeys: document.pins.log_keys };
const verifier = await openBundle(bundleJson, deps, pins);

for (const vector of document.cases) {
  test(vector.name, async () => {
    const verdict = await verifier.verify(vector.token, vector.document_type, vector.document_number, {
      courierCompany: vector.courier_company,
      at: new Date(vector.at),
      stalePolicy: vector.stale_policy,
    });
    assert.deepEqual(
      { verdict: verdict.reason, stale_bundle: verdict.staleBundle },
      vector.expect,
      `${vector.description}: ${verdict.detail}`,
    );
  });
}

test("the vectors cover every offline verdict", () => {
  assert.deepEqual(new Set(document.cases.map((c) => c.expect.verdict)), new Set(Object.values(Reason)));
});

test("a bundle whose root is not the pinned one is refused", async () => {
  await assert.rejects(openBundle(bundleJson, deps, { ...pins, rootSha256: "00".repeat(32) }), /pinned/);
});

test("a document that is not one is bad input, not a verdict", async () => {
  const good = document.cases[0];
  await assert.rejects(
    verifier.verify(good.token, 9, good.document_number, { courierCompany: good.courier_company }),
    InvalidDocumentError,
  );
  await assert.rejects(
    verifier.verify(good.token, 1, " - ", { courierCompany: good.courier_company }),
    InvalidDocumentError,
  );
});

for (const variant of document.bundle_cases) {
  test(`bundle: ${variant.name}`, async () => {
    const json = fs.readFileSync(path.join(vectors, variant.bundle), "utf8");
    if (!variant.accepted) {
      await assert.rejects(openBundle(json, deps, pins), /./, variant.description);
      return;
    }
    const ok = document.cases.find((c) => c.name === "ok");
    const opened = await openBundle(json, deps, pins);
    const verdict = await opened.verify(ok.token, ok.document_type, ok.document_number, {
      courierCompany: ok.courier_company,
      at: new Date(ok.at),
      stalePolicy: ok.stale_policy,
    });
    assert.equal(verdict.reason, Reason.OK, verdict.detail);
  });
}
