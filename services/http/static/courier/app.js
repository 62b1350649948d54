// The courier's page: a trust bundle kept in IndexedDB, the offline check of verifier.mjs, and a
// queue of confirmed handovers synced to the service (or exported as `realname courier sync`
// JSONL). The document number lives only in its input field: it is cleared after each check and
// never stored, sent or logged; a queued handover keeps its commitment, as queue.py does.
import * as asn1js from "./vendor/node_modules/asn1js/build/index.js";
import { openBundle, InvalidDocumentError, BundleError } from "./verifier.mjs";

const API = "api/";
const deps = { x509: window.x509, asn1js, argon2id: window.hashwasm.argon2id, crypto: window.crypto };
const $ = (id) => document.getElementById(id);

const TEXT = {
  zh: {
    title: "派送核验", bundle: "信任包", no_bundle: "尚未载入信任包", bundle_fetch: "从服务器更新",
    bundle_file: "选择文件", bundle_paste: "粘贴信任包", load: "载入", courier: "快递公司",
    staff: "员工号", check: "核验包裹", scan: "扫描二维码", token: "包裹码（以 RN1: 开头）",
    doc_type: "证件类型", doc_1: "居民身份证", doc_2: "护照", doc_3: "港澳居民来往内地通行证",
    doc_4: "台湾居民来往大陆通行证", doc_5: "外国人永久居留身份证",
    doc_number: "收件人出示的证件号码", verify: "核验", confirm: "确认交付", queue: "待同步的交付",
    sync: "立即同步", export: "导出 JSONL", lang: "English",
    age: (h, until) => `信任包签发于 ${h} 小时前，有效至 ${until}`,
    stale: (until) => `信任包已过期（有效至 ${until}）：请联网更新，过期前不能核验`,
    bad_bundle: (m) => `信任包无效：${m}`, fetched: "已从服务器更新信任包", offline: "无法连接服务器",
    need: "请先载入信任包并填写快递公司", need_staff: "请先填写员工号", need_token: "请粘贴或扫描包裹码",
    need_number: "请输入证件号码", bad_number: (m) => `证件号码格式不对：${m}`,
    queued: (n) => `${n} 条交付等待同步`, none: "没有待同步的交付", synced: (n) => `已同步 ${n} 条`,
    refused: (n) => `${n} 条被服务器拒绝，请联系站点`, confirmed: "已确认交付，已加入同步队列",
    no_camera: "无法使用摄像头，请粘贴包裹码", scanning: "请对准包裹上的二维码",
    verdicts: {
      OK: ["可以交付", "证件相符，商家合法。请点击“确认交付”，把包裹交给收件人。"],
      RECIPIENT_MISMATCH: ["证件不符", "不要交付。请收件人出示本人证件再核验；多次不符包裹会被锁定。"],
      BAD_SIGNATURE: ["包裹码无效", "不要交付。包裹码可能被篡改或识别错误，请重新扫描；仍失败请联系站点。"],
      SELLER_NOT_AUTHORIZED: ["商家未获授权", "不要交付。此商家无权销售电话卡，请把包裹退回站点。"],
      SELLER_REVOKED: ["商家授权已撤销", "不要交付。此商家的授权已被撤销，请把包裹退回站点。"],
      TOKEN_EXPIRED: ["包裹码已过期", "不要交付。请把包裹退回站点，由商家重新寄送。"],
      WRONG_COURIER: ["不是本公司的包裹", "不要交付。此包裹应由其他快递公司派送，请交回站点。"],
      STALE_BUNDLE: ["信任包已过期", "暂不交付。请联网更新信任包后再核验。"],
    },
  },
  en: {
    title: "Delivery check", bundle: "Trust bundle", no_bundle: "No trust bundle loaded yet",
    bundle_fetch: "Update from server", bundle_file: "Choose a file", bundle_paste: "Paste a bundle",
    load: "Load", courier: "Courier company", staff: "Staff id", check: "Check a parcel",
    scan: "Scan the QR code", token: "Parcel code (starts with RN1:)", doc_type: "Document type",
    doc_1: "Resident ID card", doc_2: "Passport", doc_3: "Hong Kong/Macao permit",
    doc_4: "Taiwan permit", doc_5: "Foreign permanent residence card",
    doc_number: "Number on the recipient's document", verify: "Check", confirm: "Confirm handover",
    queue: "Handovers to sync", sync: "Sync now", export: "Export JSONL", lang: "中文",
    age: (h, until) => `Bundle issued ${h} h ago, fresh until ${until}`,
    stale: (until) => `Bundle is out of date (fresh until ${until}): update it online before checking`,
    bad_bundle: (m) => `Not a valid bundle: ${m}`, fetched: "Bundle updated from the server",
    offline: "Cannot reach the server", need: "Load a bundle and fill in the courier company first",
    need_staff: "Fill in your staff id first", need_token: "Paste or scan the parcel code",
    need_number: "Type the document number", bad_number: (m) => `Not a document number: ${m}`,
    queued: (n) => `${n} handover(s) waiting to sync`, none: "Nothing waiting to sync",
    synced: (n) => `${n} synced`, refused: (n) => `${n} refused by the server: call your depot`,
    confirmed: "Handover confirmed and queued for sync",
    no_camera: "No camera available: paste the parcel code", scanning: "Point at the parcel's QR code",
    verdicts: {
      OK: ["Hand it over", "Document matches and the seller is authorized. Tap “Confirm handover” and give the parcel to the recipient."],
      RECIPIENT_MISMATCH: ["Wrong document", "Do not hand over. Ask for the recipient's own document and check again; repeated mismatches lock the parcel."],
      BAD_SIGNATURE: ["Parcel code not valid", "Do not hand over. The code may be tampered with or misread: scan again, then call your depot."],
      SELLER_NOT_AUTHORIZED: ["Seller not authorized", "Do not hand over. This seller may not sell SIM cards: return the parcel to the depot."],
      SELLER_REVOKED: ["Seller's authorization revoked", "Do not hand over. This seller's authorization was revoked: return the parcel to the depot."],
      TOKEN_EXPIRED: ["Parcel code expired", "Do not hand over. Return the parcel to the depot for the seller to resend."],
      WRONG_COURIER: ["Not your company's parcel", "Do not hand over. Another courier company delivers it: return it to the depot."],
      STALE_BUNDLE: ["Trust bundle out of date", "Do not hand over yet. Update the bundle online, then check again."],
    },
  },
};

let lang = "zh";
let verifier = null;
let lastOk = null; // what a confirmation keeps of the last OK verdict (no document number)
let db = null;

// -- IndexedDB: "kv" (bundle text, courier, staff id, language) and "queue" (handovers) --------
function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open("realname-courier", 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore("kv");
      request.result.createObjectStore("queue", { keyPath: "id" });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}
function tx(store, mode, work) {
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    const request = work(t.objectStore(store));
    t.oncomplete = () => resolve(request && request.result);
    t.onerror = () => reject(t.error);
  });
}
const kvGet = (key) => tx("kv", "readonly", (s) => s.get(key));
const kvPut = (key, value) => tx("kv", "readwrite", (s) => s.put(value, key));
const queued = () => tx("queue", "readonly", (s) => s.getAll());

// -- the page's words ---------------------------------------------------------------------------
const t = () => TEXT[lang];
function translate() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t().title;
  for (const node of document.querySelectorAll("[data-t]")) {
    const text = t()[node.dataset.t];
    if (typeof text === "string") node.textContent = text;
  }
  $("lang").textContent = t().lang;
  $("lang").lang = lang === "zh" ? "en" : "zh-CN";
  showBundle();
  showQueue();
  const shown = $("verdict").dataset;
  if (shown.reason) showVerdict(shown.reason, shown.detail);
}
function note(id, text, kind = "") {
  $(id).textContent = text;
  $(id).className = `status ${kind}`;
}

// -- the bundle -----------------------------------------------------------------------------------
let bundleProblem = null;
function showBundle() {
  if (bundleProblem) return note("bundle-status", t().bad_bundle(bundleProblem), "bad");
  if (!verifier) return note("bundle-status", t().no_bundle, "warn");
  const until = verifier.freshUntil.toLocaleString(lang === "zh" ? "zh-CN" : "en-GB");
  if (new Date() > verifier.freshUntil) return note("bundle-status", t().stale(until), "bad");
  const hours = Math.floor((Date.now() - verifier.issuedAt.getTime()) / 3_600_000);
  note("bundle-status", t().age(hours, until));
}
async function useBundle(text, keep) {
  try {
    verifier = await openBundle(text, deps);
    bundleProblem = null;
    if (keep) await kvPut("bundle", text);
  } catch (error) {
    if (!(error instanceof BundleError || error instanceof SyntaxError || error instanceof TypeError)) throw error;
    bundleProblem = error.message;
  }
  showBundle();
}
async function fetchBundle() {
  try {
    const reply = await fetch(`${API}bundle`, { cache: "no-store" });
    if (!reply.ok) throw new Error(String(reply.status));
    const courier = reply.headers.get("X-Courier-Company");
    if (courier) { $("courier").value = courier; await kvPut("courier", courier); }
    await useBundle(await reply.text(), true);
    return true;
  } catch {
    return false;
  }
}

// -- the check -----------------------------------------------------------------------------------
const STOP = new Set(["RECIPIENT_MISMATCH", "BAD_SIGNATURE", "SELLER_NOT_AUTHORIZED", "SELLER_REVOKED",
  "TOKEN_EXPIRED", "WRONG_COURIER"]);
function showVerdict(reason, detail) {
  const [title, next] = t().verdicts[reason];
  const box = $("verdict");
  box.hidden = false;
  box.className = reason === "OK" ? "ok" : STOP.has(reason) ? "stop" : "wait";
  box.dataset.reason = reason;
  box.dataset.detail = detail;
  $("verdict-title").textContent = title;
  $("verdict-next").textContent = next;
  $("verdict-code").textContent = `${reason}: ${detail}`;
  $("confirm").hidden = reason !== "OK" || !lastOk;
}
function showMessage(text) {
  const box = $("verdict");
  box.hidden = false;
  box.className = "wait";
  delete box.dataset.reason;
  $("verdict-title").textContent = text;
  $("verdict-next").textContent = "";
  $("verdict-code").textContent = "";
  $("confirm").hidden = true;
}
async function check() {
  lastOk = null;
  const courier = $("courier").value.trim();
  if (!verifier || !courier) return showMessage(t().need);
  const token = $("token").value.replace(/\s+$/u, "").replace(/^\s+/u, "");
  if (!token) return showMessage(t().need_token);
  const numberField = $("doc-number");
  if (!numberField.value) return showMessage(t().need_number);
  const docType = Number($("doc-type").value);
  let verdict;
  try {
    verdict = await verifier.verify(token, docType, numberField.value, { courierCompany: courier, stalePolicy: "refuse" });
  } catch (error) {
    if (!(error instanceof InvalidDocumentError)) throw error;
    return showMessage(t().bad_number(error.message));
  } finally {
    numberField.value = ""; // the number is not kept, not even in the form
  }
  await kvPut("courier", courier);
  if (verdict.reason === "OK") lastOk = { verdict, docType };
  showVerdict(verdict.reason, verdict.detail);
}

// -- the queue (registry/delivery/queue.py's confirmation lines) ----------------------------------
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const b64 = (bytes) => btoa(String.fromCharCode(...bytes));
const utcSeconds = (date) => date.toISOString().replace(/\.\d{3}Z$/, "Z");
async function confirmHandover() {
  const staff = $("staff").value.trim();
  if (!staff) return showMessage(t().need_staff);
  if (!lastOk) return;
  const { verdict, docType } = lastOk;
  const record = {
    v: 1, type: "confirmation", id: hex(crypto.getRandomValues(new Uint8Array(16))),
    token: b64(verdict.tokenBytes), token_digest: hex(verdict.tokenDigest), document_type: docType,
    presented_commitment: hex(verdict.presentedCommitment), recipient_match: true,
    offline_reason: verdict.reason, stale_bundle: verdict.staleBundle, courier_staff_id: staff,
    delivered_at: utcSeconds(new Date()),
  };
  await tx("queue", "readwrite", (s) => s.put(record));
  await kvPut("staff", staff);
  lastOk = null;
  $("confirm").hidden = true;
  $("token").value = "";
  showMessage(t().confirmed);
  await showQueue();
  if (navigator.onLine) await sync();
}
let queueNote = "";
async function showQueue() {
  if (!db) return;
  const pending = (await queued()).filter((r) => !r.server_reason);
  const refused = (await queued()).length - pending.length;
  const parts = [pending.length ? t().queued(pending.length) : t().none];
  if (refused) parts.push(t().refused(refused));
  if (queueNote) parts.push(queueNote);
  note("queue-status", parts.join(" · "), refused ? "bad" : "");
}
const line = (r) => JSON.stringify(Object.fromEntries(Object.entries(r).filter(([k]) => k !== "server_reason")));
async function sync() {
  const pending = (await queued()).filter((r) => !r.server_reason);
  if (!pending.length) return showQueue();
  let results;
  try {
    const reply = await fetch(`${API}confirmations`, {
      method: "POST", headers: { "Content-Type": "application/x-ndjson" },
      body: pending.map((r) => `${line(r)}\n`).join(""), cache: "no-store",
    });
    if (!reply.ok) throw new Error(String(reply.status));
    results = (await reply.json()).results;
  } catch {
    queueNote = t().offline;
    return showQueue();
  }
  let done = 0;
  for (const result of results) {
    if (result.recorded) {
      done += 1;
      await tx("queue", "readwrite", (s) => s.delete(result.id));
    } else if (result.final) {
      const record = pending.find((r) => r.id === result.id);
      if (record) await tx("queue", "readwrite", (s) => s.put({ ...record, server_reason: result.reason }));
    }
  }
  queueNote = t().synced(done);
  await showQueue();
}
async function exportQueue() {
  const lines = (await queued()).map((r) => `${line(r)}\n`).join("");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([lines], { type: "application/x-ndjson" }));
  link.download = `courier-queue-${utcSeconds(new Date()).replace(/:/g, "")}.jsonl`;
  link.click();
  URL.revokeObjectURL(link.href);
}

// -- the camera: BarcodeDetector where the browser has one, else jsQR (vendored) on frames ------
function frameReader(video) {
  if ("BarcodeDetector" in window) {
    const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
    return async () => (await detector.detect(video)).map((c) => c.rawValue);
  }
  const canvas = $("frame");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  return async () => {
    if (!video.videoWidth) return [];
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    context.drawImage(video, 0, 0);
    const code = window.jsQR(context.getImageData(0, 0, canvas.width, canvas.height).data, canvas.width, canvas.height);
    return code ? [code.data] : [];
  };
}
async function scan() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return showMessage(t().no_camera);
  const video = $("video");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  } catch {
    return showMessage(t().no_camera);
  }
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  showMessage(t().scanning);
  const read = frameReader(video);
  const stop = () => { stream.getTracks().forEach((track) => track.stop()); video.hidden = true; };
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const found = (await read()).find((text) => text.startsWith("RN1:"));
    if (found) { $("token").value = found; stop(); $("verdict").hidden = true; $("doc-number").focus(); return; }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  stop();
}

// -- start --------------------------------------------------------------------------------------
async function start() {
  db = await openDb();
  lang = (await kvGet("lang")) || "zh";
  $("courier").value = (await kvGet("courier")) || "";
  $("staff").value = (await kvGet("staff")) || "";
  const kept = await kvGet("bundle");
  if (kept) await useBundle(kept, false);
  translate();
  $("lang").onclick = async () => { lang = lang === "zh" ? "en" : "zh"; translate(); await kvPut("lang", lang); };
  $("bundle-fetch").onclick = async () => note("bundle-status", (await fetchBundle()) ? t().fetched : t().offline, "");
  $("bundle-file").onchange = async (event) => { const file = event.target.files[0]; if (file) await useBundle(await file.text(), true); };
  $("bundle-load").onclick = () => useBundle($("bundle-text").value, true);
  $("courier").oninput = () => kvPut("courier", $("courier").value.trim());
  $("staff").oninput = () => kvPut("staff", $("staff").value.trim());
  $("verify").onclick = check;
  $("confirm").onclick = confirmHandover;
  $("sync").onclick = sync;
  $("export").onclick = exportQueue;
  $("scan").onclick = scan;
  window.addEventListener("online", sync);
  if ("serviceWorker" in navigator) await navigator.serviceWorker.register("sw.js");
  document.body.dataset.ready = "1";
  if (navigator.onLine) await sync();
}
start();
