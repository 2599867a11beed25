// pac_harness.js evaluates a proxy auto-config (PAC) file with the standard PAC helper
// functions, for tests (package pac's Eval embeds it).
//
//   node pac_harness.js FILE.pac URL...       prints "URL<TAB>result" lines
//   node pac_harness.js < request.json        request: {"pac": "...", "tests": [{"url": "...",
//                                             "host": "..."}], "noIsInNetEx": false}
//                                             prints {"results": [...], "resolved": [...],
//                                             "alerts": [...]}
//
// The PAC runs in a vm context of its own with only the PAC functions, as in a browser.
// Name resolution (dnsResolve, isResolvable, isInNet on a name, ...) resolves nothing: it
// answers null or false and is recorded in "resolved", as a browser would block on it.
// noIsInNetEx leaves out the Microsoft IPv6 functions, as Firefox does.
"use strict";
const fs = require("fs");
const vm = require("vm");

function parseV4(s) {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const b = m.slice(1).map(Number);
  if (b.some((x) => x > 255)) return null;
  return b;
}

// parseV6 returns the 16 bytes of an IPv6 literal (no brackets, no zone), or null.
function parseV6(s) {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.indexOf(":") < 0) return null;
  let tail = [];
  const lastColon = s.lastIndexOf(":");
  if (s.indexOf(".", lastColon) >= 0) {
    const v4 = parseV4(s.substring(lastColon + 1));
    if (!v4) return null;
    tail = v4;
    s = s.substring(0, lastColon + 1) + "0:0"; // placeholder groups, replaced below
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (h) => (h === "" ? [] : h.split(":"));
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = head.concat(new Array(halves.length === 2 ? missing : 0).fill("0"), rest);
  const bytes = [];
  for (const g of all) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    const n = parseInt(g, 16);
    bytes.push(n >> 8, n & 255);
  }
  if (tail.length) bytes.splice(12, 4, ...tail);
  return bytes;
}

function parseIP(s) {
  const v4 = parseV4(s);
  if (v4) return { v: 4, bytes: v4 };
  const v6 = parseV6(s);
  return v6 ? { v: 6, bytes: v6 } : null;
}

function prefixMatch(a, b, bits) {
  for (let i = 0; i < a.length && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 255 : (0xff << (8 - bits)) & 255;
    if ((a[i] & mask) !== (b[i] & mask)) return false;
  }
  return true;
}

function makeContext(noIsInNetEx, resolved, alerts) {
  const resolve = (name) => {
    resolved.push(String(name));
    return null;
  };
  const fns = {
    isPlainHostName: (host) => host.search("(\\.)|:") === -1,
    dnsDomainIs: (host, domain) =>
      host.length >= domain.length && host.substring(host.length - domain.length) === domain,
    localHostOrDomainIs: (host, hostdom) => host === hostdom || hostdom.lastIndexOf(host + ".", 0) === 0,
    isResolvable: (host) => (resolve(host), false),
    dnsResolve: (host) => resolve(host),
    myIpAddress: () => "127.0.0.1",
    dnsDomainLevels: (host) => host.split(".").length - 1,
    isInNet: (host, pattern, mask) => {
      const p = parseV4(pattern);
      const m = parseV4(mask);
      if (!p || !m) throw new Error("isInNet: bad pattern or mask: " + pattern + " " + mask);
      // As Chrome's and Firefox's: four numbers are an address (false when one is over
      // 255); anything else is a name to resolve, on which a browser blocks.
      if (!/^\d{1,4}\.\d{1,4}\.\d{1,4}\.\d{1,4}$/.test(host)) {
        resolve(host);
        return false;
      }
      const h = parseV4(host);
      if (!h) return false;
      return h.every((b, i) => (b & m[i]) === (p[i] & m[i]));
    },
    shExpMatch: (str, exp) => {
      const re = exp.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
      return new RegExp("^" + re + "$").test(str);
    },
    weekdayRange: () => false,
    dateRange: () => false,
    timeRange: () => false,
    alert: (msg) => alerts.push(String(msg)),
  };
  if (!noIsInNetEx) {
    Object.assign(fns, {
      isInNetEx: (host, prefix) => {
        const slash = prefix.indexOf("/");
        const p = slash < 0 ? null : parseIP(prefix.substring(0, slash));
        const bits = slash < 0 ? NaN : Number(prefix.substring(slash + 1));
        if (!p || !Number.isInteger(bits) || bits < 0 || bits > p.bytes.length * 8) {
          throw new Error("isInNetEx: bad prefix " + prefix);
        }
        const h = parseIP(host);
        if (!h) {
          resolve(host);
          return false;
        }
        return h.v === p.v && prefixMatch(h.bytes, p.bytes, bits);
      },
      isResolvableEx: (host) => (resolve(host), false),
      dnsResolveEx: (host) => (resolve(host), ""),
      myIpAddressEx: () => "127.0.0.1",
      sortIpAddressList: (list) => list,
      getClientVersion: () => "1.0",
    });
  }
  return vm.createContext(fns);
}

function run(req) {
  const resolved = [];
  const alerts = [];
  const ctx = makeContext(!!req.noIsInNetEx, resolved, alerts);
  vm.runInContext(req.pac, ctx, { filename: "proxy.pac", timeout: 2000 });
  if (typeof ctx.FindProxyForURL !== "function") throw new Error("the PAC defines no FindProxyForURL");
  ctx.__tests = req.tests;
  const results = vm.runInContext(
    "__tests.map(function (t) { return FindProxyForURL(t.url, t.host); })",
    ctx,
    { timeout: 2000 }
  );
  for (const r of results) {
    if (typeof r !== "string") throw new Error("FindProxyForURL returned a " + typeof r + ", not a string");
  }
  return { results: Array.from(results), resolved, alerts };
}

if (process.argv.length > 2) {
  const pac = fs.readFileSync(process.argv[2], "utf8");
  const urls = process.argv.slice(3);
  // Like Chrome, without the brackets of an IPv6 host.
  const host = (u) => new URL(u).hostname.replace(/^\[(.*)\]$/, "$1");
  const out = run({ pac, tests: urls.map((u) => ({ url: u, host: host(u) })) });
  urls.forEach((u, i) => console.log(u + "\t" + out.results[i]));
  for (const r of out.resolved) console.error("resolved: " + r);
} else {
  const req = JSON.parse(fs.readFileSync(0, "utf8"));
  process.stdout.write(JSON.stringify(run(req)) + "\n");
}
