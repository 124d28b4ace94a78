#!/usr/bin/python3
"""test_ui.py - the operator's console (GET /ui) in a real browser.

Debian's headless Chromium, driven by Selenium through Debian's
chromium-driver (no browser download), against a real three-node cluster
(scripts/cluster.sh: FerretDB, Redis, three syncd) that requires a bearer
token and beats every second. In order:

- the console of node 1 asks for the token once (a reload does not ask
  again), then loads with no error in the browser's console and lists the
  three nodes;
- a write made with syncctl on node 2 shows up in the live event list
  within a second of syncctl returning (the stream is read with fetch(),
  carrying the token);
- the health view shows the collection's digests agreeing on all nodes,
  and its Verify button gets every node's agreement with the store;
- the document view renders the diff of two kept versions side by side;
- a rollback, confirmed in the page, is committed: node 3 serves the old
  body as a new version (HTTP and syncctl);
- node 3 killed with SIGKILL leaves the node list.

Before the browser, over plain HTTP: /ui and its files are served without
the token, with their content type, an ETag (304 on If-None-Match) and a
Content-Security-Policy; the API still wants the token; a CORS preflight
from another node's origin is allowed (without the token, as browsers send
it), one from a foreign origin gets 403, and only the cluster's origins get
Access-Control-Allow-Origin.

A screenshot of each state goes to ARTIFACTS (build/ui-artifacts/). Exits
77 (skipped) only when chromium or chromium-driver is not installed.

Usage: tests/test_ui.py SYNCD SYNCCTL ARTIFACTS
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "scripts", "cluster.sh")
TOKEN = "console-test-token"
COLL = "users"


def find_browser():
    """Returns the paths of chromium and chromedriver, or None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    return (chromium, driver) if chromium and driver else None


def fail(msg):
    raise AssertionError(msg)


def wait_until(what, cond, timeout, step=0.05):
    """Polls cond() until it returns a true value, for at most timeout s."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            fail("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(step)


class Cluster:
    def __init__(self, syncd, syncctl, tmp):
        self.syncctl = syncctl
        self.env = dict(os.environ)
        self.env.update({
            "SYNCD_BIN": syncd,
            "SYNCD_CLUSTER_DIR": os.path.join(tmp, "cluster"),
            "SYNCD_CLUSTER_ARGS": "--heartbeat-interval 1s --token " + TOKEN,
        })
        self.dir = self.env["SYNCD_CLUSTER_DIR"]
        self.urls = {}

    def run(self, *args):
        subprocess.run([CLUSTER] + list(args), env=self.env, check=True,
                       stdout=subprocess.DEVNULL)

    def start(self):
        self.run("start")
        with open(os.path.join(self.dir, "env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k in ("NODE1", "NODE2", "NODE3"):
                    self.urls[int(k[-1])] = v

    def stop(self):
        subprocess.run([CLUSTER, "stop"], env=self.env)

    def ctl(self, node, *args, stdin=None):
        """Runs syncctl against node; returns its stdout."""
        r = subprocess.run([self.syncctl, "--server", self.urls[node],
                            "--token", TOKEN] + list(args),
                           input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            fail("syncctl %s: %s" % (" ".join(args), r.stderr.strip()))
        return r.stdout

    def raw(self, node, path, method="GET", headers=None):
        """Sends one request to node; returns (status, headers, body bytes),
        whatever the status."""
        req = urllib.request.Request(self.urls[node] + path, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def get(self, node, path):
        """GETs path of node; returns (status, headers, parsed JSON body)."""
        req = urllib.request.Request(self.urls[node] + path, headers={
            "Authorization": "Bearer " + TOKEN})
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, json.loads(r.read())


class Console:
    def __init__(self, chromium, driver, artifacts):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-dev-shm-usage", "--window-size=1400,1100",
                  "--no-first-run", "--disable-extensions"):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service(driver), options=opts)
        self.artifacts = artifacts
        self.shots = 0

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def text(self, css):
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return e ? e.textContent : null;", css)

    def count(self, css):
        return self.js("return document.querySelectorAll(arguments[0]).length;", css)

    def click(self, css):
        self.js("document.querySelector(arguments[0]).click();", css)

    def select(self, css, value):
        self.js("const s = document.querySelector(arguments[0]);"
                "s.value = String(arguments[1]);"
                "s.dispatchEvent(new Event('change'));", css, value)

    def errors(self):
        """The console messages of level SEVERE since the last call."""
        return [e for e in self.d.get_log("browser") if e.get("level") == "SEVERE"]

    def shot(self, name):
        self.shots += 1
        path = os.path.join(self.artifacts, "%02d-%s.png" % (self.shots, name))
        self.d.save_screenshot(path)
        print("test_ui: screenshot %s" % path)

    def quit(self):
        self.d.quit()


def check_http(cluster):
    """The console's files, their headers, and CORS, over plain HTTP."""
    types = {"/ui": "text/html", "/ui/": "text/html",
             "/ui/console.js": "text/javascript", "/ui/console.css": "text/css"}
    for path, ctype in types.items():
        status, h, body = cluster.raw(1, path)
        if status != 200 or not h.get("Content-Type", "").startswith(ctype):
            fail("GET %s without a token: %d %s" % (path, status, h.get("Content-Type")))
        if "script-src 'self'" not in h.get("Content-Security-Policy", ""):
            fail("GET %s has no CSP" % path)
        etag = h.get("ETag")
        status, h2, body2 = cluster.raw(1, path, headers={"If-None-Match": etag})
        if not etag or status != 304 or body2 != b"":
            fail("GET %s with If-None-Match %s: %d" % (path, etag, status))
    if cluster.raw(1, "/ui/nothing.js")[0] != 404:
        fail("an unknown console file is not 404")
    if cluster.raw(1, "/v1/nodes")[0] != 401:
        fail("the API answers without the token")
    other = cluster.urls[2]
    status, h, _ = cluster.raw(1, "/v1/nodes", method="OPTIONS", headers={
        "Origin": other, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    if (status != 204 or h.get("Access-Control-Allow-Origin") != other or
            "Authorization" not in h.get("Access-Control-Allow-Headers", "")):
        fail("the preflight from node 2's origin: %d %s" % (status, dict(h)))
    status, h, _ = cluster.raw(1, "/v1/nodes", method="OPTIONS", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    if status != 403 or h.get("Access-Control-Allow-Origin") is not None:
        fail("the preflight from a foreign origin: %d %s" % (status, dict(h)))
    auth = {"Authorization": "Bearer " + TOKEN}
    _, h, _ = cluster.raw(1, "/v1/health", headers=dict(auth, Origin=other))
    if h.get("Access-Control-Allow-Origin") != other:
        fail("node 2's origin may not read node 1")
    _, h, _ = cluster.raw(1, "/v1/health", headers=dict(auth, Origin="http://evil.example"))
    if h.get("Access-Control-Allow-Origin") is not None:
        fail("a foreign origin may read node 1")


def node_ids(c):
    return c.js("return [...document.querySelectorAll('#nodes-table tbody tr')]"
                ".map(r => r.dataset.node);")


def main():
    if len(sys.argv) != 4:
        print("usage: test_ui.py SYNCD SYNCCTL ARTIFACTS", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print("test_ui: SKIP: chromium or chromium-driver is not installed")
        return 77
    syncd, syncctl, artifacts = sys.argv[1:]
    os.makedirs(artifacts, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="syncd-test-ui-")
    cluster = Cluster(syncd, syncctl, tmp)
    console = None
    try:
        cluster.start()
        # A document with two versions, so that it has a history.
        cluster.ctl(1, "put", COLL, "u1", stdin='{"name":"alpha","n":1,"tags":["a","b"]}')
        cluster.ctl(1, "put", COLL, "u2", stdin='{"name":"gamma","n":2}')
        cluster.ctl(2, "put", COLL, "u1", stdin='{"name":"beta","n":2,"tags":["a","c"]}')

        wait_until("node 1 to know node 2",
                   lambda: len(cluster.get(1, "/v1/nodes")[2]["nodes"]) == 3, 10)
        check_http(cluster)

        console = Console(*browser, artifacts)
        console.d.get(cluster.urls[1] + "/ui")
        wait_until("the token prompt",
                   lambda: console.js("return !document.getElementById('token-panel').hidden;"), 10)
        console.js("document.getElementById('token-input').value = arguments[0];"
                   "document.querySelector('#token-panel button').click();", TOKEN)

        wait_until("three nodes", lambda: node_ids(console) == ["node-1", "node-2", "node-3"], 15)
        wait_until("the collection and its documents",
                   lambda: console.count("#docs-table tbody tr") == 2, 15)
        wait_until("the watch stream", lambda: console.text("#live-status") == "connected", 10)
        if console.js("return sessionStorage.getItem('syncd-token');") != TOKEN:
            fail("the token is not kept in session storage")
        errs = console.errors()
        if errs:
            fail("console errors on load: %s" % errs)
        console.shot("nodes")

        # A reload keeps the token: the console does not ask again.
        console.d.refresh()
        wait_until("three nodes after a reload",
                   lambda: node_ids(console) == ["node-1", "node-2", "node-3"], 15)
        if console.js("return !document.getElementById('token-panel').hidden;"):
            fail("the console asks for the token again after a reload")
        wait_until("the watch stream after a reload",
                   lambda: console.text("#live-status") == "connected", 10)

        # Live: a write on node 2, seen on node 1's console within 1 s.
        cluster.ctl(2, "put", COLL, "live-1", stdin='{"hello":"world"}')
        written = time.monotonic()
        wait_until("the event of live-1",
                   lambda: console.count('#events li[data-id="live-1"][data-v="1"]') == 1, 1.0,
                   step=0.02)
        print("test_ui: event shown %.0f ms after syncctl returned"
              % ((time.monotonic() - written) * 1000))
        if '"hello"' not in console.text('#events li[data-id="live-1"]'):
            fail("the event does not show its patch")
        console.shot("live-event")

        # Health: the three nodes agree on the collection's digest.
        wait_until("digest agreement",
                   lambda: console.js("const r = document.querySelector("
                                      "'#health-table tr[data-coll=\"users\"]');"
                                      "return r && r.dataset.agree === 'yes' && "
                                      "r.textContent.includes('node-3: 3 docs');"), 15)
        console.click('#health-table tr[data-coll="users"] button')
        wait_until("every node's verify answer",
                   lambda: console.count('#health-table tr[data-coll="users"] .differs .ok') == 3, 15)
        console.shot("health")

        # History: the diff of versions 1 and 2 of u1, side by side.
        console.js("document.querySelector('#docs-table tr[data-id=\"u1\"] button').click();")
        wait_until("the history of u1", lambda: console.count("#history-table tbody tr") >= 2, 10)
        console.select("#diff-a", 1)
        console.select("#diff-b", 2)
        console.click("#diff-form button")
        wait_until("the diff", lambda: console.count("#diff .del") > 0, 10)
        dels = console.js("return [...document.querySelectorAll('#diff .del')].map(e => e.textContent);")
        adds = console.js("return [...document.querySelectorAll('#diff .add')].map(e => e.textContent);")
        if not any('"alpha"' in t for t in dels) or not any('"beta"' in t for t in adds):
            fail("the diff shows neither alpha removed nor beta added: %s %s" % (dels, adds))
        console.js("document.getElementById('doc').scrollIntoView();")
        console.shot("history-diff")

        # Rollback to version 1, confirmed in the page.
        console.select("#rollback-to", 1)
        console.click("#rollback-form button")
        wait_until("the confirmation",
                   lambda: console.js("return !document.getElementById('rollback-confirm').hidden;"), 5)
        console.shot("rollback-confirm")
        console.click("#rollback-yes")
        wait_until("the rollback result",
                   lambda: "now version 3" in (console.text("#rollback-result") or ""), 10)
        status, headers, body = cluster.get(3, "/v1/collections/%s/docs/u1" % COLL)
        if headers.get("ETag") != '"3"' or body != {"name": "alpha", "n": 1, "tags": ["a", "b"]}:
            wait_until("node 3 to serve the rolled back version 3",
                       lambda: cluster.get(3, "/v1/collections/%s/docs/u1" % COLL)[1].get("ETag") == '"3"',
                       5)
            status, headers, body = cluster.get(3, "/v1/collections/%s/docs/u1" % COLL)
        if body != {"name": "alpha", "n": 1, "tags": ["a", "b"]}:
            fail("node 3 serves %s after the rollback" % body)
        if json.loads(cluster.ctl(1, "get", COLL, "u1")) != body:
            fail("syncctl get disagrees with HTTP after the rollback")
        wait_until("the rolled back version in the page",
                   lambda: "version 3" in (console.text("#doc-version") or ""), 5)
        errs = console.errors()
        if errs:
            fail("console errors: %s" % errs)
        console.shot("rollback-done")
        console.js("window.scrollTo(0, 0);")
        console.shot("overview")

        # A killed node leaves the list (three heartbeats of 1 s, and more).
        cluster.run("kill-node", "3")
        wait_until("node-3 to go", lambda: node_ids(console) == ["node-1", "node-2"], 10)
        console.shot("node-gone")
        print("test_ui: PASS")
        return 0
    except AssertionError as e:
        print("test_ui: FAIL: %s" % e, file=sys.stderr)
        if console is not None:
            console.shot("failure")
        for n in (1, 2, 3):
            log = os.path.join(cluster.dir, "node%d" % n, "syncd.log")
            if os.path.exists(log):
                with open(log) as f:
                    print("--- %s\n%s" % (log, "".join(f.readlines()[-15:])), file=sys.stderr)
        return 1
    finally:
        if console is not None:
            console.quit()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
