// The courier's offline delivery check, in the browser (and under Node's test runner).
//
// A port of registry/delivery (offline.py, checks.py, token.py, bundle.py) and of the parts of
// registry/pki/verify.py, registry/note.py and registry/merkle.py it needs: the same checks in
// the same order (registry/delivery/checks.py CHECK_ORDER), the same verdict names. The shared
// vectors in tests/vectors/delivery/ pin both to the same answers (tests/js/).
//
// Cryptography is WebCrypto's (ECDSA P-256, Ed25519, SHA-256); X.509 certificates and CRLs are
// parsed and their signatures checked by @peculiar/x509, the two realname certificate
// extensions are read with asn1js, and the recipient commitment is hash-wasm's Argon2id: all
// vendored in ./vendor with their licences (vendor/README.md). They are passed in, so that a
// page loads them with <script> tags and a test from files:
//
//   const verifier = await openBundle(bundleJson, { x509, asn1js, argon2id, crypto }, pins);
//   const verdict = await verifier.verify(tokenText, documentType, number, {
//     courierCompany, at: new Date(), stalePolicy: "refuse" });
//   // { reason: "OK" | "RECIPIENT_MISMATCH" | ..., detail, staleBundle, token }
//
// Not ported: the full RFC 5280 profile checks of cryptography's path validator (here:
// signatures, validity windows, the store EKU, no SAN, not a CA).

export const Reason = Object.freeze({
  OK: "OK",
  RECIPIENT_MISMATCH: "RECIPIENT_MISMATCH",
  BAD_SIGNATURE: "BAD_SIGNATURE",
  SELLER_NOT_AUTHORIZED: "SELLER_NOT_AUTHORIZED",
  SELLER_REVOKED: "SELLER_REVOKED",
  TOKEN_EXPIRED: "TOKEN_EXPIRED",
  WRONG_COURIER: "WRONG_COURIER",
  STALE_BUNDLE: "STALE_BUNDLE",
});

const TEXT_PREFIX = "RN1:";
const TOKEN_VERSION = 2;
const SIGNING_LABEL = utf8("realname/delivery/shipment-token/v2\x00");
const COMMITMENT_LABEL = utf8("realname/recipient-commitment/v2\x00");
const P256_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const HALF_ORDER = P256_ORDER / 2n;
const MAX_SECONDS = 253402300799; // 9999-12-31T23:59:59Z, as token.py
const FLOOR = { memoryKib: 19456, iterations: 4 };
const MAX_MEMORY_KIB = 262144;
const MAX_WORK = 1048576;
const MAX_PARALLELISM = 4;
const MAX_NUMBER_LENGTH = 64;
const DOCUMENT_TYPES = new Set([1, 2, 3, 4, 5]);
const BASE45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
const OID = {
  storeAuthorization: "1.3.6.1.4.1.32473.1.1.1",
  storeEku: "1.3.6.1.4.1.32473.1.1.2",
  operatorAuthority: "1.3.6.1.4.1.32473.1.1.3",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  anyEku: "2.5.29.37.0",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  crlNumber: "2.5.29.20",
};
const COMPROMISE_REASONS = new Set([1, 2, 10]); // keyCompromise, cACompromise, aACompromise
const OPERATOR_ID = /^[a-z][a-z0-9-]{1,15}$/;
const COURIER_ID = /^[a-z0-9][a-z0-9._-]*$/;
const WAYBILL = /^[\x21-\x7e]+$/;
const ICCID = /^89[0-9]{17,18}$/;
const MASKED = /^1[3-9][0-9]\*{4}[0-9]{4}$/;
// What Python's str.isprintable() refuses: controls, format, surrogates, private use,
// unassigned, and separators other than the ASCII space.
const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;
// registry.subscribers.normalise_number removes Python's \s (str.isspace) and dashes.
const NUMBER_NOISE =
  /[\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000-]/g;

export class TokenDecodeError extends Error {}
export class BundleError extends Error {}
export class InvalidDocumentError extends Error {}
class RevocationUnavailable extends Error {}

function utf8(text) {
  return new TextEncoder().encode(text);
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0; // no early exit: a commitment comparison should not leak where it differs
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function bigint(bytes) {
  return bytes.length ? BigInt("0x" + hex(bytes)) : 0n;
}

function serialOf(hexText) {
  return BigInt("0x" + (hexText || "0"));
}

function fromBase64(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  if (toBase64(out) !== text) throw new BundleError("not canonical base64");
  return out;
}

function toBase64(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

function iso(date) {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** RFC 9285 base45, refusing what registry/delivery/base45.py refuses. */
export function b45decode(text) {
  if (text.length % 3 === 1) throw new TokenDecodeError("base45 text length is 1 modulo 3");
  const values = Array.from(text, (c) => {
    const v = BASE45.indexOf(c);
    if (v < 0) throw new TokenDecodeError(`${JSON.stringify(c)} is not a base45 character`);
    return v;
  });
  const out = [];
  const full = values.length - (values.length % 3);
  for (let i = 0; i < full; i += 3) {
    const v = values[i] + values[i + 1] * 45 + values[i + 2] * 2025;
    if (v > 0xffff) throw new TokenDecodeError("base45 triple exceeds two bytes");
    out.push(v >> 8, v & 0xff);
  }
  if (full < values.length) {
    const v = values[full] + values[full + 1] * 45;
    if (v > 0xff) throw new TokenDecodeError("base45 pair exceeds one byte");
    out.push(v);
  }
  return new Uint8Array(out);
}

class Reader {
  constructor(data) {
    this.data = data;
    this.pos = 0;
  }
  take(count, what) {
    if (this.pos + count > this.data.length) throw new TokenDecodeError(`token ends inside ${what}`);
    const chunk = this.data.subarray(this.pos, this.pos + count);
    this.pos += count;
    return chunk;
  }
  field(what, low, high) {
    const length = this.take(1, what)[0];
    if (length > high) throw new TokenDecodeError(`${what} is ${length} bytes, at most ${high}`);
    if (length < low) throw new TokenDecodeError(`${what} is ${length} bytes, at least ${low}`);
    return this.take(length, what);
  }
  text(what, low, high) {
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(this.field(what, low, high));
    } catch (error) {
      if (error instanceof TokenDecodeError) throw error;
      throw new TokenDecodeError(`${what} is not valid UTF-8`);
    }
  }
  uint(size, what) {
    return Number(bigint(this.take(size, what)));
  }
  finish() {
    if (this.pos !== this.data.length) {
      throw new TokenDecodeError(`${this.data.length - this.pos} bytes after the signature`);
    }
  }
}

function luhn(digits) {
  let total = 0;
  [...digits].reverse().forEach((c, i) => {
    let v = c.charCodeAt(0) - 48;
    if (i % 2) v = v > 4 ? v * 2 - 9 : v * 2;
    total += v;
  });
  return total % 10 === 0;
}

function checkKdf(kdf) {
  if (kdf.kdf !== 1) throw new TokenDecodeError(`unknown recipient commitment KDF ${kdf.kdf}`);
  if (kdf.memoryKib < FLOOR.memoryKib || kdf.iterations < FLOOR.iterations) {
    throw new TokenDecodeError("recipient commitment parameters are under the floor");
  }
  if (kdf.parallelism < 1 || kdf.parallelism > MAX_PARALLELISM) {
    throw new TokenDecodeError(`recipient commitment parallelism must be 1-${MAX_PARALLELISM}`);
  }
  if (kdf.memoryKib > MAX_MEMORY_KIB || kdf.memoryKib * kdf.iterations > MAX_WORK) {
    throw new TokenDecodeError("recipient commitment parameters are past what a verifier computes");
  }
}

function fieldProblems(f) {
  const problems = [];
  if (NOT_PRINTABLE.test(f.orderId) || f.orderId !== f.orderId.trim()) {
    problems.push("order id must be printable text without surrounding blanks");
  }
  if (!WAYBILL.test(f.waybill) || f.waybill.length > 40) problems.push("bad waybill");
  if (!COURIER_ID.test(f.courier) || f.courier.length > 32) problems.push("bad courier");
  if (!ICCID.test(f.iccid) || !luhn(f.iccid)) problems.push("bad ICCID");
  if (!MASKED.test(f.msisdnMasked)) problems.push("bad masked MSISDN");
  if (!OPERATOR_ID.test(f.operator) || f.operator === "root") problems.push("bad operator id");
  if (f.expiresAt <= f.issuedAt) problems.push("expiry must be after issuance");
  return problems;
}

/** Decode token bytes strictly, as registry/delivery/token.py decode_token (no signature check). */
export function decodeToken(data) {
  const r = new Reader(data);
  const version = r.take(1, "version")[0];
  if (version === 1) throw new TokenDecodeError("token version 1 is no longer accepted");
  if (version !== TOKEN_VERSION) throw new TokenDecodeError(`unknown token version ${version}`);
  const fields = {
    orderId: r.text("order id", 1, 64),
    waybill: r.text("waybill", 1, 40),
    courier: r.text("courier", 1, 32),
    iccid: r.text("ICCID", 19, 20),
    msisdnMasked: r.text("masked MSISDN", 11, 11),
    operator: r.text("operator", 2, 16),
  };
  const serial = r.field("store serial", 1, 20);
  if (serial[0] === 0) throw new TokenDecodeError("store serial has a leading zero byte");
  fields.storeSerial = bigint(serial);
  for (const name of ["issuedAt", "expiresAt"]) {
    const seconds = r.uint(8, name);
    if (seconds > MAX_SECONDS) throw new TokenDecodeError(`${name} is out of range`);
    fields[name] = new Date(seconds * 1000);
  }
  fields.kdf = {
    kdf: r.uint(1, "KDF"),
    memoryKib: r.uint(4, "KDF memory"),
    iterations: r.uint(1, "KDF iterations"),
    parallelism: r.uint(1, "KDF parallelism"),
  };
  checkKdf(fields.kdf);
  fields.salt = r.take(16, "salt");
  fields.commitment = r.take(32, "commitment");
  const signature = r.take(64, "signature");
  r.finish();
  const rValue = bigint(signature.subarray(0, 32));
  const sValue = bigint(signature.subarray(32));
  if (!(rValue > 0n && rValue < P256_ORDER && sValue > 0n && sValue <= HALF_ORDER)) {
    throw new TokenDecodeError("signature is not a canonical (low-S) P-256 signature");
  }
  const problems = fieldProblems(fields);
  if (problems.length) throw new TokenDecodeError(problems.join("; "));
  return { fields, signature, body: data.subarray(0, data.length - 64) };
}

/** The token bytes of a text (QR) form. */
export function decodeText(text) {
  if (!text.startsWith(TEXT_PREFIX)) throw new TokenDecodeError(`token text must start with ${TEXT_PREFIX}`);
  return b45decode(text.slice(TEXT_PREFIX.length));
}

/** registry.subscribers.normalise_number. */
export function normaliseNumber(raw) {
  return raw.replace(NUMBER_NOISE, "").toUpperCase();
}

function documentBytes(docType, number) {
  if (!DOCUMENT_TYPES.has(docType)) throw new InvalidDocumentError(`unknown document type ${docType}`);
  const normal = normaliseNumber(number);
  if (!normal) throw new InvalidDocumentError("document number is empty");
  if ([...normal].length > MAX_NUMBER_LENGTH) {
    throw new InvalidDocumentError(`document number is longer than ${MAX_NUMBER_LENGTH}`);
  }
  if (NOT_PRINTABLE.test(normal)) {
    throw new InvalidDocumentError("document number contains non-printable characters");
  }
  return concat(COMMITMENT_LABEL, new Uint8Array([docType]), utf8(normal));
}

/** The recipient commitment (registry/delivery/commitment.py commit) with hash-wasm's Argon2id. */
export async function commit(argon2id, docType, number, salt, kdf) {
  return argon2id({
    password: documentBytes(docType, number),
    salt,
    parallelism: kdf.parallelism,
    iterations: kdf.iterations,
    memorySize: kdf.memoryKib,
    hashLength: 32,
    outputType: "binary",
  });
}

// -- the bundle's log part: signed note, checkpoint, inclusion proofs --------------------------

async function sha256(crypto, ...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

const ED25519_TYPE = 0x01; // a log's note signature
const COSIGNATURE_TYPE = 0x04; // a witness's timestamped cosignature (C2SP tlog-cosignature)

async function parseVerifierKey(crypto, key, type) {
  // name+hash+base64: the base64 may itself hold "+", the name and hash cannot.
  const [, name, keyHash, encoded] = /^([^+]+)\+([^+]*)\+(.*)$/.exec(key) || [];
  if (!name || !/^[0-9a-f]{8}$/i.test(keyHash || "")) {
    throw new BundleError(`verifier key ${key} is malformed`);
  }
  const raw = fromBase64(encoded);
  if (raw.length !== 33 || raw[0] !== type) throw new BundleError(`${name} is not the expected kind of key`);
  const expected = await sha256(crypto, utf8(name + "\n"), raw);
  if (hex(expected.subarray(0, 4)) !== keyHash.toLowerCase()) {
    throw new BundleError("verifier key hash does not match the key");
  }
  const publicKey = await crypto.subtle.importKey("raw", raw.subarray(1), { name: "Ed25519" }, false, [
    "verify",
  ]);
  return { name, keyHash: expected.subarray(0, 4), type, publicKey };
}

async function signatureHolds(crypto, verifier, signature, text) {
  if (verifier.type === ED25519_TYPE) {
    return signature.length === 64 && crypto.subtle.verify({ name: "Ed25519" }, verifier.publicKey, signature, utf8(text));
  }
  if (signature.length !== 72) return false;
  const time = bigint(signature.subarray(0, 8));
  const message = utf8(`cosignature/v1\ntime ${time}\n${text}`);
  return crypto.subtle.verify({ name: "Ed25519" }, verifier.publicKey, signature.subarray(8), message);
}

/**
 * Open the bundle's checkpoint with one of the log keys (registry/checkpoint.py open_checkpoint):
 * every signature by a known key must verify, the log's must be there, and witnesses' verified
 * cosignatures must reach the threshold. Return the tree size and root hash.
 */
async function openCheckpoint(crypto, note, origin, logKeys, witnessKeys, threshold) {
  const witnesses = [];
  for (const key of witnessKeys) {
    const witness = await parseVerifierKey(crypto, key, COSIGNATURE_TYPE);
    const id = `${witness.name}+${hex(witness.keyHash)}`;
    if (!witnesses.some((w) => `${w.name}+${hex(w.keyHash)}` === id)) witnesses.push(witness);
  }
  if ((witnesses.length || threshold) && !(threshold >= 1 && threshold <= witnesses.length)) {
    throw new BundleError(`witness threshold ${threshold} must be 1..${witnesses.length}`);
  }
  const split = note.lastIndexOf("\n\n");
  if (split < 0 || !note.endsWith("\n")) throw new BundleError("checkpoint is not a signed note");
  const text = note.slice(0, split + 1);
  const lines = note.slice(split + 2, -1).split("\n").map((line) => {
    const match = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!match) throw new BundleError("malformed signature line");
    const data = fromBase64(match[2]);
    if (data.length < 5) throw new BundleError("signature too short");
    return { name: match[1], keyHash: data.subarray(0, 4), signature: data.subarray(4) };
  });
  const problems = [];
  attempt: for (const key of logKeys) {
    const log = await parseVerifierKey(crypto, key, ED25519_TYPE);
    let logSigned = false;
    const cosigned = new Set();
    for (const line of lines) {
      const verifier = [log, ...witnesses].find((v) => v.name === line.name && equal(v.keyHash, line.keyHash));
      if (!verifier) continue; // a signature by an unknown key is ignored, as open_note does
      if (!(await signatureHolds(crypto, verifier, line.signature, text))) {
        problems.push(`${line.name}: signature does not verify`);
        continue attempt;
      }
      if (verifier === log) logSigned = true;
      else cosigned.add(`${verifier.name}+${hex(verifier.keyHash)}`);
    }
    if (!logSigned) {
      problems.push(`${log.name}: checkpoint not signed by this key`);
      continue;
    }
    if (cosigned.size < threshold) {
      throw new BundleError(`${threshold} witness cosignatures required, ${cosigned.size} verified`);
    }
    const [checkpointOrigin, size, root] = text.split("\n");
    if (checkpointOrigin !== origin) throw new BundleError("checkpoint names another log");
    if (!/^(0|[1-9][0-9]*)$/.test(size)) throw new BundleError("checkpoint size is malformed");
    const rootHash = fromBase64(root);
    if (rootHash.length !== 32) throw new BundleError("checkpoint root is not a SHA-256 hash");
    return { size: Number(size), root: rootHash };
  }
  throw new BundleError(`bundle checkpoint does not verify (${problems.join("; ")})`);
}

/** RFC 9162 section 2.1.3.2: does the proof put the leaf at index in the tree (size, root)? */
async function inclusionHolds(crypto, leaf, index, size, proof, root) {
  if (index >= size) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  const node = new Uint8Array([1]);
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(crypto, node, p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = await sha256(crypto, node, r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equal(r, root);
}

/** An issuance or renewal log entry (registry/log/entries.py): operator, serial, certificate. */
function decodeStoreEntry(entry) {
  const r = new Reader(entry);
  const text = (what) => new TextDecoder("utf-8", { fatal: true }).decode(r.field(what, 1, 255));
  if (r.take(1, "version")[0] !== 1) throw new BundleError("unknown log entry version");
  const kind = r.take(1, "kind")[0];
  if (kind !== 1 && kind !== 2) throw new BundleError("store entry is not an issuance or renewal");
  r.take(8, "time");
  const operator = text("operator");
  text("marketplace");
  text("shop id");
  text("credit code");
  const serial = bigint(r.field("serial", 1, 20));
  if (kind === 2) r.field("previous serial", 1, 20);
  const length = r.uint(2, "certificate length");
  const der = r.take(length, "certificate");
  r.finish();
  return { operator, serial, der };
}

// -- the bundle's trust part: root, operator CAs, CRLs -----------------------------------------

/** The operator id in a realname extension value: SEQUENCE { INTEGER 1, PrintableString, ... }. */
function operatorOfExtension(asn1js, extension) {
  if (!extension) return null;
  const parsed = asn1js.fromBER(extension.value);
  if (parsed.offset === -1) return null;
  const items = parsed.result.valueBlock.value;
  if (!Array.isArray(items) || items.length < 2) return null;
  if (items[0].valueBlock.valueDec !== 1) return null;
  const operator = items[1].valueBlock.value;
  return typeof operator === "string" && OPERATOR_ID.test(operator) ? operator : null;
}

function crlNumberOf(asn1js, crl) {
  const extension = crl.getExtension(OID.crlNumber);
  if (!extension) return null;
  const parsed = asn1js.fromBER(extension.value);
  if (parsed.offset === -1 || typeof parsed.result.toBigInt !== "function") return null;
  return parsed.result.toBigInt();
}

function keyIdOf(x509, certificate, kind) {
  const extension = certificate.getExtension(kind);
  return extension && extension.keyId ? extension.keyId.toLowerCase() : null;
}

function within(certificate, moment) {
  return certificate.notBefore <= moment && moment <= certificate.notAfter;
}

class Trust {
  static async open(deps, trust) {
    const { x509, asn1js, crypto } = deps;
    const self = new Trust();
    self.deps = deps;
    self.root = new x509.X509Certificate(trust.root);
    self.rootDer = new Uint8Array(self.root.rawData);
    const rootOk = await self.root.verify({ publicKey: self.root.publicKey, signatureOnly: true }, crypto);
    if (!rootOk) throw new BundleError("the root is not self-signed");
    self.cas = new Map(); // subject key id -> { certificate, operator, subject, serial }
    for (const pem of trust.operator_cas) {
      const certificate = new x509.X509Certificate(pem);
      const ok = await certificate.verify({ publicKey: self.root.publicKey, signatureOnly: true }, crypto);
      if (!ok) throw new BundleError(`operator CA ${certificate.subject} is not signed by the root`);
      const keyId = keyIdOf(x509, certificate, x509.SubjectKeyIdentifierExtension);
      if (!keyId) throw new BundleError("operator CA certificate has no subjectKeyIdentifier");
      const operator = operatorOfExtension(asn1js, certificate.getExtension(OID.operatorAuthority));
      if (!operator) throw new BundleError("operator CA certificate has no OperatorAuthority");
      self.cas.set(keyId, { certificate, operator, subject: certificate.subject, serial: serialOf(certificate.serialNumber) });
    }
    self.crls = new Map(); // issuer name -> { number, nextUpdate, entries: Map(serial -> {date, reason}) }
    self.horizon = null;
    const newest = new Map();
    for (const pem of trust.crls) {
      const crl = new x509.X509Crl(pem);
      const number = crlNumberOf(asn1js, crl);
      // The horizon (bundle.py _revocation_horizon) reads every CRL, verified or not.
      const seen = newest.get(crl.issuer);
      const rank = number === null ? -1n : number;
      if (!seen || rank > seen.rank) newest.set(crl.issuer, { rank, nextUpdate: crl.nextUpdate });
      const signers =
        crl.issuer === self.root.subject
          ? [self.root]
          : [...self.cas.values()].filter((ca) => ca.subject === crl.issuer).map((ca) => ca.certificate);
      const wanted = keyIdOf(x509, crl, x509.AuthorityKeyIdentifierExtension);
      let verified = false;
      for (const signer of signers) {
        const signerKeyId = keyIdOf(x509, signer, x509.SubjectKeyIdentifierExtension);
        if (wanted && signerKeyId && signerKeyId !== wanted) continue;
        const usage = signer.getExtension(x509.KeyUsagesExtension);
        if (!usage || !(usage.usages & x509.KeyUsageFlags.cRLSign)) continue;
        if (await crl.verify({ publicKey: signer.publicKey }, crypto)) {
          verified = true;
          break;
        }
      }
      if (!verified) throw new BundleError(`CRL of ${crl.issuer} has a signature no bundle CA made`);
      if (!crl.nextUpdate) throw new BundleError("CRL has no nextUpdate");
      if (number === null) throw new BundleError("CRL has no CRL number");
      const current = self.crls.get(crl.issuer);
      if (!current || number > current.number) {
        const entries = new Map();
        for (const entry of crl.entries) {
          entries.set(serialOf(entry.serialNumber), { date: entry.revocationDate, reason: entry.reason ?? 0 });
        }
        self.crls.set(crl.issuer, { number, nextUpdate: crl.nextUpdate, entries });
      }
    }
    const updates = [...newest.values()].map((v) => v.nextUpdate).filter(Boolean);
    self.horizon = updates.length ? new Date(Math.min(...updates.map(Number))) : null;
    return self;
  }

  freshCrl(issuer, what, moment) {
    const index = this.crls.get(issuer);
    if (index && moment <= index.nextUpdate) return index;
    if (!index) throw new RevocationUnavailable(`the trust bundle has no CRL for ${what}`);
    throw new RevocationUnavailable(`the CRL for ${what} expired at ${iso(index.nextUpdate)}`);
  }

  static lookup(index, serial, moment) {
    const entry = index.entries.get(serial);
    if (!entry) return null;
    return entry.date <= moment || COMPROMISE_REASONS.has(entry.reason) ? entry : null;
  }

  /** registry/pki/verify.py Verifier.verify, for the reasons the delivery check tells apart. */
  async verify(certificate, moment) {
    const { x509, asn1js, crypto } = this.deps;
    const aki = keyIdOf(x509, certificate, x509.AuthorityKeyIdentifierExtension);
    const ca = aki ? this.cas.get(aki) : [...this.cas.values()].find((c) => c.subject === certificate.issuer);
    if (!ca) return { reason: "UNKNOWN_STORE", detail: "issuing key is not an operator CA in the trust bundle" };
    const signed = await certificate.verify({ publicKey: ca.certificate.publicKey, signatureOnly: true }, crypto);
    if (!signed) return { reason: "INVALID_SIGNATURE", detail: "certificate signature does not verify" };
    for (const [member, what] of [
      [certificate, "store certificate"],
      [ca.certificate, `operator CA of ${ca.operator}`],
      [this.root, "regulator root"],
    ]) {
      if (moment > member.notAfter) return { reason: "EXPIRED", detail: `${what} expired at ${iso(member.notAfter)}` };
      if (moment < member.notBefore) return { reason: "NOT_YET_VALID", detail: `${what} is not valid yet` };
    }
    const eku = certificate.getExtension(x509.ExtendedKeyUsageExtension);
    const usages = new Set(eku ? eku.usages : []);
    if (!usages.has(OID.storeEku)) return { reason: "UNKNOWN_STORE", detail: "no store-authorization purpose" };
    if (usages.has(OID.serverAuth) || usages.has(OID.clientAuth) || usages.has(OID.anyEku)) {
      return { reason: "UNKNOWN_STORE", detail: "extended key usage also allows TLS or any purpose" };
    }
    const constraints = certificate.getExtension(x509.BasicConstraintsExtension);
    if (certificate.getExtension(OID.subjectAltName) || (constraints && constraints.ca)) {
      return { reason: "INVALID_SIGNATURE", detail: "certificate path breaks the store profile" };
    }
    const rootCrl = this.freshCrl(this.root.subject, "the regulator root", moment);
    if (Trust.lookup(rootCrl, ca.serial, moment)) {
      return { reason: "OPERATOR_REVOKED", detail: `operator CA of ${ca.operator} was revoked`, operator: ca.operator };
    }
    const operatorCrl = this.freshCrl(ca.subject, `operator ${ca.operator}`, moment);
    if (Trust.lookup(operatorCrl, serialOf(certificate.serialNumber), moment)) {
      return { reason: "REVOKED", detail: `store authorization was revoked by ${ca.operator}`, operator: ca.operator };
    }
    const named = operatorOfExtension(asn1js, certificate.getExtension(OID.storeAuthorization));
    if (!named) return { reason: "UNKNOWN_STORE", detail: "not a store authorization", operator: ca.operator };
    if (named !== ca.operator) {
      return { reason: "UNKNOWN_STORE", detail: `authorization names ${named} but ${ca.operator}'s CA issued it` };
    }
    return { reason: "AUTHORIZED", detail: `authorized by ${ca.operator}`, operator: ca.operator, ca };
  }
}

// -- the offline verifier ----------------------------------------------------------------------

class OfflineVerifier {
  /** registry/delivery/offline.py OfflineVerifier.judge. */
  async judge(certificate, operator, at) {
    const known = this.stores.get(`${operator}/${serialOf(certificate.serialNumber)}`);
    const logProblem =
      !known || known.certificate !== certificate ? "certificate is not among the bundle's logged stores" : known.logProblem;
    const horizon = this.trust.horizon;
    const moment = horizon === null || at <= horizon ? at : horizon;
    let verdict;
    try {
      verdict = await this.trust.verify(certificate, moment);
    } catch (error) {
      if (error instanceof RevocationUnavailable) {
        return { reason: Reason.SELLER_NOT_AUTHORIZED, detail: `revocation status unavailable: ${error.message}` };
      }
      throw error;
    }
    if (moment < at && verdict.reason === "AUTHORIZED") {
      for (const [member, what] of [
        [certificate, "store certificate"],
        [verdict.ca.certificate, "operator CA"],
        [this.trust.root, "regulator root"],
      ]) {
        if (at > member.notAfter) {
          return { reason: Reason.SELLER_NOT_AUTHORIZED, detail: `EXPIRED: ${what} expired at ${iso(member.notAfter)}` };
        }
      }
    }
    if (verdict.reason === "REVOKED" || verdict.reason === "OPERATOR_REVOKED") {
      return { reason: Reason.SELLER_REVOKED, detail: verdict.detail };
    }
    if (verdict.reason !== "AUTHORIZED") {
      return { reason: Reason.SELLER_NOT_AUTHORIZED, detail: `${verdict.reason}: ${verdict.detail}` };
    }
    if (verdict.operator !== operator) {
      return {
        reason: Reason.SELLER_NOT_AUTHORIZED,
        detail: `the token names operator ${operator} but ${verdict.operator} authorized this store`,
      };
    }
    if (logProblem) {
      return { reason: Reason.SELLER_NOT_AUTHORIZED, detail: `store certificate not proven in the log: ${logProblem}` };
    }
    return null;
  }

  /**
   * Check a token (text form or bytes) and the document shown at the door.
   *
   * Resolves to { reason, detail, staleBundle, checkedAt, token } (and, once the recipient was
   * checked, presentedCommitment, tokenBytes, tokenDigest: what a queued handover keeps); rejects with
   * InvalidDocumentError for a document that is not one (bad input, not a verdict).
   */
  async verify(token, docType, number, { courierCompany, at = new Date(), stalePolicy = "warn" }) {
    documentBytes(docType, number); // bad input is refused before any check, as checks.py does
    if (stalePolicy !== "warn" && stalePolicy !== "refuse") throw new Error("stalePolicy is warn or refuse");
    const moment = new Date(Math.max(Math.floor(at.getTime() / 1000) * 1000, this.issuedAt.getTime()));
    const stale = moment > this.freshUntil;
    const result = (reason, detail, decoded = null) => ({
      reason,
      detail,
      staleBundle: stale,
      checkedAt: moment,
      token: decoded ? decoded.fields : null,
    });
    if (stale && stalePolicy === "refuse") {
      return result(Reason.STALE_BUNDLE, `bundle was fresh until ${iso(this.freshUntil)}; refresh it`);
    }
    let decoded;
    try {
      decoded = decodeToken(typeof token === "string" ? decodeText(token) : token);
    } catch (error) {
      if (error instanceof TokenDecodeError) return result(Reason.BAD_SIGNATURE, `token does not decode: ${error.message}`);
      throw error;
    }
    const f = decoded.fields;
    const known = this.stores.get(`${f.operator}/${f.storeSerial}`);
    if (!known) {
      return result(Reason.SELLER_NOT_AUTHORIZED, `no store authorization ${f.storeSerial.toString(16)} of ${f.operator} is known`, decoded);
    }
    if (!(await this.signatureHolds(known, decoded))) {
      return result(Reason.BAD_SIGNATURE, "token signature does not verify with the store's key", decoded);
    }
    const judgement = await this.judge(known.certificate, f.operator, moment);
    if (judgement) return result(judgement.reason, judgement.detail, decoded);
    if (moment >= f.expiresAt) return result(Reason.TOKEN_EXPIRED, `token expired at ${iso(f.expiresAt)}`, decoded);
    if (courierCompany !== f.courier) {
      return result(Reason.WRONG_COURIER, `token is for courier ${f.courier}, not ${courierCompany}`, decoded);
    }
    const proof = await commit(this.deps.argon2id, docType, number, f.salt, f.kdf);
    // What a queued confirmation keeps instead of the number (registry/delivery/queue.py).
    const kept = {
      presentedCommitment: proof,
      tokenBytes: concat(decoded.body, decoded.signature),
      tokenDigest: await sha256(this.deps.crypto, decoded.body),
    };
    if (!equal(proof, f.commitment)) {
      return { ...result(Reason.RECIPIENT_MISMATCH, "presented document is not the recipient's", decoded), ...kept };
    }
    return { ...result(Reason.OK, "seller authorized and logged; recipient matches", decoded), ...kept };
  }

  async signatureHolds(known, decoded) {
    const { crypto } = this.deps;
    const key = known.certificate.publicKey;
    if (key.algorithm.name !== "ECDSA" || key.algorithm.namedCurve !== "P-256") return false;
    const publicKey = await crypto.subtle.importKey(
      "spki",
      key.rawData,
      { name: "ECDSA", namedCurve: "P-256" },
      false,
      ["verify"],
    );
    return crypto.subtle.verify(
      { name: "ECDSA", hash: "SHA-256" },
      publicKey,
      decoded.signature,
      concat(SIGNING_LABEL, decoded.body),
    );
  }
}

/**
 * Verify a realname-delivery-bundle once (checkpoint, CAs, CRLs, inclusion proofs) and return
 * the verifier for its tokens. pins: { rootSha256 (hex), logKeys } replace the bundle's anchors.
 */
export async function openBundle(bundleJson, deps, pins = {}) {
  const { crypto } = deps;
  const bundle = typeof bundleJson === "string" ? JSON.parse(bundleJson) : bundleJson;
  if (bundle.format !== "realname-delivery-bundle" || bundle.version !== 1) {
    throw new BundleError("not a realname-delivery-bundle version 1");
  }
  const verifier = new OfflineVerifier();
  verifier.deps = deps;
  verifier.trust = await Trust.open(deps, bundle.trust);
  if (pins.rootSha256 && hex(await sha256(crypto, verifier.trust.rootDer)) !== pins.rootSha256) {
    throw new BundleError("bundle root is not the pinned regulator root");
  }
  const checkpoint = await openCheckpoint(
    crypto,
    bundle.log.checkpoint,
    bundle.log.origin,
    pins.logKeys || bundle.log.verifier_keys,
    bundle.log.witness_keys || [],
    bundle.log.witness_threshold || 0,
  );
  verifier.issuedAt = new Date(bundle.issued_at);
  const expiresAt = new Date(verifier.issuedAt.getTime() + bundle.max_age_seconds * 1000);
  const horizon = verifier.trust.horizon;
  verifier.freshUntil = horizon === null || expiresAt < horizon ? expiresAt : horizon;
  verifier.stores = new Map();
  for (const item of bundle.stores) {
    const entry = fromBase64(item.entry);
    const decoded = decodeStoreEntry(entry);
    const certificate = new deps.x509.X509Certificate(decoded.der);
    if (serialOf(certificate.serialNumber) !== decoded.serial) {
      throw new BundleError("log entry serial differs from its certificate's serial");
    }
    const leaf = await sha256(crypto, new Uint8Array([0]), entry);
    const proof = item.proof.map(fromBase64);
    const holds = await inclusionHolds(crypto, leaf, item.leaf_index, checkpoint.size, proof, checkpoint.root);
    verifier.stores.set(`${decoded.operator}/${decoded.serial}`, {
      certificate,
      logProblem: holds ? null : `inclusion proof of leaf ${item.leaf_index} in tree ${checkpoint.size} fails`,
    });
  }
  return verifier;
}
