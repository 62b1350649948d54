// The courier page's service worker: keeps the page and every file it loads, so that once
// loaded it opens and verifies with no network. The server fills in VERSION (a digest of the
// files) and FILES (services/http/courier.py); a changed file makes a new worker and cache.
// The API (bundle download, handover sync) always goes to the network and is never cached.
const VERSION = "__VERSION__";
const FILES = ["__FILES__"];
const CACHE = `courier-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((n) => n.startsWith("courier-") && n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  const scope = new URL(self.registration.scope);
  if (event.request.method !== "GET" || url.origin !== scope.origin) return;
  if (!url.pathname.startsWith(scope.pathname) || url.pathname.startsWith(`${scope.pathname}api/`)) return;
  const key = event.request.mode === "navigate" ? scope.href : url.origin + url.pathname;
  event.respondWith(caches.match(key, { cacheName: CACHE }).then((hit) => hit || fetch(event.request)));
});
