"""The operator page (/ui/) in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium, against real agents on free 127.0.0.1 ports.

Run by `cargo xtask ci` with CARAVAN_BIN pointing at the built binary. Screenshots of each page
go to target/ui-screens/, with the page weight and first contentful paint in metrics.txt there.
Skips (with the reason) only when no chromium/chromedriver is installed.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCREENS = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "ui-screens")
XSS = "<img src=x onerror=alert(1)>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed in the venv")
if not (CHROMIUM and DRIVER):
    pytest.skip(
        "browser tests need Debian's chromium and chromium-driver (apt-get install -y chromium "
        "chromium-driver; .ci/run installs them)",
        allow_module_level=True,
    )

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

# Bounds: gossip marks a killed server failed within its suspicion time (seconds); every wait here
# is bounded and none is a timed assertion.
WAIT = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """One `caravan agent` process on free ports; `stop()` always ends it."""

    def __init__(self, args, hcl, workdir, name):
        self.http, self.rpc, self.serf = free_port(), free_port(), free_udp_port()
        self.name = name
        cfg = os.path.join(workdir, f"{len(os.listdir(workdir))}.hcl")
        with open(cfg, "w") as f:
            f.write(
                f"ports {{\n  http = {self.http}\n  rpc = {self.rpc}\n  serf = {self.serf}\n}}\n"
                f'bind_addr = "127.0.0.1"\n{hcl}'
            )
        self.proc = subprocess.Popen(
            [os.environ["CARAVAN_BIN"], "agent", *args, f"-config={cfg}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http}"

    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=5, **kw)

    def wait_http(self, ok=lambda r: r.status_code == 200, path="/v1/agent/self", what="answers"):
        deadline = time.monotonic() + WAIT
        last = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited"
            try:
                last = self.get(path)
                if ok(last):
                    return last
            except requests.RequestException as e:
                last = e
            time.sleep(0.1)
        raise AssertionError(f"{self.name} {what} within {WAIT}s: {last}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory() as d:
        yield d


@pytest.fixture(scope="module")
def cluster(workdir):
    """Three servers (the second one named with an HTML tag) and a client node."""
    agents = []
    try:
        names = ["s1", XSS, "s3"]
        first = None
        for i, name in enumerate(names):
            data = os.path.join(workdir, f"data{i}")
            os.makedirs(data)
            join = (
                f'  server_join {{\n    retry_join = ["127.0.0.1:{first.serf}"]\n    retry_interval = "200ms"\n  }}\n'
                if first
                else ""
            )
            a = Agent(
                ["-server", f"-data-dir={data}"],
                f"name = {json.dumps(name)}\nenable_debug = true\nserver {{\n  bootstrap_expect = 3\n{join}}}\n",
                workdir,
                name,
            )
            agents.append(a)
            first = first or a
        for a in agents:
            a.wait_http(lambda r: r.status_code == 200 and r.json()["stats"]["nomad"].get("leader_addr"),
                        what="knows a leader")
        cdata = os.path.join(workdir, "client")
        os.makedirs(cdata)
        client = Agent(
            ["-client", f"-data-dir={cdata}", f"-servers=127.0.0.1:{first.rpc}"],
            'name = "c1"\n',
            workdir,
            "c1",
        )
        agents.append(client)
        first.wait_http(
            lambda r: any(n["Name"] == "c1" and n["Status"] == "ready" for n in r.json()),
            path="/v1/nodes",
            what="lists the client ready",
        )
        yield agents
    finally:
        for a in agents:
            a.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run"]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(WAIT)
    os.makedirs(SCREENS, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver, what, cond, limit=WAIT):
    try:
        return WebDriverWait(driver, limit, poll_frequency=0.1).until(lambda d: cond(d))
    except TimeoutException:
        raise AssertionError(f"{what} within {limit}s") from None


def rows(driver, table):
    """The table's cells as text, read in one go (the page redraws its tables while it runs)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(tr => Array.from(tr.cells).map(td => td.textContent));",
        f"#{table} tbody tr",
    )


def shot(driver, name):
    path = os.path.join(SCREENS, name)
    driver.save_screenshot(path)
    return path


_recorded = []


def record(line):
    """Appends a figure to target/ui-screens/metrics.txt (started anew by each run)."""
    os.makedirs(SCREENS, exist_ok=True)
    with open(os.path.join(SCREENS, "metrics.txt"), "a" if _recorded else "w") as f:
        _recorded.append(line)
        f.write(line + "\n")
    print(line)


# ---- the cluster page ----------------------------------------------------------------------


def test_cluster_page_lists_every_member(cluster, browser):
    s1 = cluster[0]
    browser.get(s1.url + "/ui/")
    servers = until(
        browser,
        "three alive servers, one leader",
        lambda d: (lambda r: r if len(r) == 3 and all(x[2] == "alive" for x in r)
                   and sorted(x[5] for x in r) == ["follower", "follower", "leader"] else None)(rows(d, "servers")),
    )
    assert {r[0] for r in servers} == {"s1.global", XSS + ".global", "s3.global"}
    # Every follower's last contact (autopilot's health), not only this agent's.
    import re
    contacts = until(
        browser,
        "each follower's last contact",
        lambda d: (lambda r: r if sorted(x[6] == "(leader)" for x in r) == [False, False, True]
                   and all(x[6] == "(leader)" or re.fullmatch(r"[0-9.]+(ns|µs|us|ms|s)", x[6]) for x in r)
                   else None)(rows(d, "servers")),
    )
    assert len(contacts) == 3
    nodes = until(browser, "the client node", lambda d: rows(d, "nodes") or None)
    assert [(n[0], n[4]) for n in nodes] == [("c1", "ready")]
    # Its last heartbeat, as the leader saw it (this agent may be a follower: it asks the leader).
    beat = until(browser, "the client's last heartbeat",
                 lambda d: (lambda r: r[0][5] if r and re.fullmatch(r"([0-9]+m)?[0-9.]+s ago \(TTL [0-9]+s\)", r[0][5])
                            else None)(rows(d, "nodes")))
    # Within its TTL and grace (the TTL is at least 10 s, the grace 10 s): not a stale record.
    assert "m" not in beat.split(" ago")[0], beat
    # Performance figures of this first load (reported, not asserted).
    fcp = browser.execute_script(
        "const p = performance.getEntriesByName('first-contentful-paint'); return p.length ? p[0].startTime : null;"
    )
    total = 0
    for name in ["", "app.js", "app.css"]:
        r = requests.get(s1.url + "/ui/" + name, headers={"Accept-Encoding": "gzip"}, timeout=5, stream=True)
        assert r.status_code == 200
        assert r.headers.get("content-encoding") == "gzip"
        total += len(r.raw.read())
    record(f"page weight: {total} bytes gzipped (index.html + app.js + app.css, as served)")
    record(f"first contentful paint: {fcp:.0f} ms (headless Chromium, performance API)" if fcp else
           "first contentful paint: not reported")
    shot(browser, "cluster.png")


def test_member_named_with_html_is_text(cluster, browser):
    browser.get(cluster[0].url + "/ui/#cluster")
    # The literal text in a cell with no element inside: the DOM, not a dialog, is checked.
    children = until(
        browser,
        "the tag-named member's row",
        lambda d: d.execute_script(
            "const td = Array.from(document.querySelectorAll('#servers td'))"
            ".find(td => td.textContent === arguments[0]);"
            "return td ? [td.childElementCount, td.firstChild.nodeType] : null;",
            XSS + ".global",
        ),
    )
    assert children == [0, 3], children  # no element, one text node (Node.TEXT_NODE)
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0


def test_agent_page_and_scheduler_controls(cluster, browser):
    s1 = cluster[0]
    browser.get(s1.url + "/ui/#agent")
    until(browser, "the agent's facts", lambda d: ["Member", "s1.global"] in rows(d, "agent-facts"))
    until(browser, "the scheduler controls (no ACLs: anyone may)", lambda d: d.find_element(By.ID, "sched-form").is_displayed())
    until(browser, "two workers", lambda d: len(rows(d, "workers")) == 2)
    until(browser, "the worker count", lambda d: d.find_element(By.ID, "sched-num").get_attribute("value") == "2")
    health = until(browser, "health", lambda d: rows(d, "health") or None)
    assert ["server", "ok", "ok"] in health
    browser.find_element(By.ID, "sched-pause").click()
    until(browser, "the pause applied", lambda d: d.find_element(By.ID, "sched-result").text == "now 0 workers")
    assert s1.get("/v1/agent/schedulers/config").json()["num_schedulers"] == 0
    until(browser, "every worker paused", lambda d: all(r[1] == "Paused" for r in rows(d, "workers")))
    browser.find_element(By.ID, "sched-resume").click()
    until(browser, "the resume applied", lambda d: d.find_element(By.ID, "sched-result").text == "now 2 workers")
    shot(browser, "agent.png")


def test_jobs_page_registers_and_shows_a_job(cluster, browser):
    s1 = cluster[0]
    browser.get(s1.url + "/ui/#jobs")
    until(browser, "the registration form (no ACLs: anyone may)", lambda d: d.find_element(By.ID, "job-register").is_displayed())
    job = {"ID": "web-ui", "Type": "batch", "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "g", "Count": 1, "Tasks": [{"Name": "t", "Driver": "exec", "Resources": {"CPU": 10, "MemoryMB": 16}}]}]}
    area = browser.find_element(By.ID, "job-json")
    area.clear()
    area.send_keys(json.dumps(job))
    browser.find_element(By.ID, "job-submit").click()
    until(browser, "the registration's answer", lambda d: "registered" in d.find_element(By.ID, "job-result").text)
    until(browser, "the job listed (blocking query)", lambda d: any(r and r[0] == "web-ui" for r in rows(d, "jobs")))
    browser.find_element(By.CSS_SELECTOR, "#jobs tbody button").click()
    until(browser, "its evaluation", lambda d: rows(d, "job-evals") or None)
    allocs = until(browser, "its allocation placed on c1", lambda d: rows(d, "job-allocs") or None)
    assert allocs[0][2].startswith("c1 ("), allocs
    shot(browser, "jobs.png")


def test_log_tail_shows_a_line_a_request_provoked(cluster, browser):
    s1 = cluster[0]
    browser.get(s1.url + "/ui/#logs")
    Select(browser.find_element(By.ID, "log-level")).select_by_visible_text("debug")
    until(browser, "following at debug", lambda d: d.find_element(By.ID, "log-state").text == "following at debug")
    marker = f"ui-marker-{os.getpid()}"
    deadline = time.monotonic() + WAIT
    seen = False
    while not seen and time.monotonic() < deadline:
        # The stream may open after a first request: send until one lands in the tail.
        s1.get(f"/v1/status/leader?{marker}=1")
        try:
            WebDriverWait(browser, 1, poll_frequency=0.1).until(
                lambda d: marker in d.find_element(By.ID, "log-lines").text)
            seen = True
        except TimeoutException:
            pass
    assert seen, f"no log line with {marker} within {WAIT}s"
    browser.find_element(By.ID, "log-toggle").click()
    until(browser, "paused", lambda d: d.find_element(By.ID, "log-state").text == "paused")
    shot(browser, "logs.png")


def test_cross_site_write_from_a_browser_is_refused(cluster, browser):
    """A page of another site (a plain page served from another port, so another origin)
    posts to the agent as a CSRF attack would; the agent refuses it and nothing changes."""
    import http.server
    import threading

    class Blank(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>elsewhere</title><p>another site</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    s1 = cluster[0]
    before = s1.get("/v1/agent/schedulers/config").json()["num_schedulers"]
    assert before > 0
    other = http.server.HTTPServer(("127.0.0.1", 0), Blank)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{other.server_address[1]}/")
        status = browser.execute_async_script(
            """const done = arguments[arguments.length - 1];
            fetch(arguments[0], {method: 'POST', body: '{"num_schedulers":0,"enabled_schedulers":["service","_core"]}'})
              .then(r => done(r.status), e => done(String(e)));""",
            f"http://127.0.0.1:{s1.http}/v1/agent/schedulers/config",
        )
    finally:
        other.shutdown()
        other.server_close()
    # The browser does not let the page read the answer (no CORS); the agent's state is the proof.
    assert status in (403, "TypeError: Failed to fetch"), status
    assert s1.get("/v1/agent/schedulers/config").json()["num_schedulers"] == before
    r = requests.post(s1.url + "/v1/agent/schedulers/config", data="{}", timeout=5,
                      headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site request refused" in r.text, r.text
    r = requests.get(s1.url + "/v1/agent/self", timeout=5, headers={"Host": "evil.example"})
    assert r.status_code == 403 and "DNS rebinding" in r.text, r.text


def test_killed_server_shows_failed_without_reload(cluster, browser):
    s1, s3 = cluster[0], cluster[2]
    browser.get(s1.url + "/ui/#cluster")
    until(browser, "s3 alive", lambda d: any(r and r[0] == "s3.global" and r[2] == "alive" for r in rows(d, "servers")))
    browser.execute_script("window.__noReload = 1;")
    s3.stop(signal.SIGKILL)
    until(browser, "s3 shown failed", lambda d: any(r and r[0] == "s3.global" and r[2] == "failed"
                                                   for r in rows(d, "servers")))
    until(browser, "s3 judged unhealthy", lambda d: any(r and r[0] == "s3.global" and r[6].endswith("(unhealthy)")
                                                       for r in rows(d, "servers")))
    assert browser.execute_script("return window.__noReload") == 1, "the page was reloaded"
    shot(browser, "cluster-failed.png")


# ---- ACLs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_agent(workdir):
    a = Agent(["-dev", "-acl-enabled"], 'name = "acl-dev"\n', workdir, "acl-dev")
    try:
        a.wait_http(lambda r: r.status_code in (200, 403), what="answers")
        deadline = time.monotonic() + WAIT
        while True:
            r = requests.put(a.url + "/v1/acl/bootstrap", timeout=5)
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, f"ACL bootstrap: {r.status_code} {r.text}"
            time.sleep(0.2)
        a.secret = r.json()["SecretID"]

        def token_with(rules):
            mgmt = {"X-Nomad-Token": a.secret}
            name = f"p{len(rules)}-{time.monotonic_ns()}"
            r = requests.post(f"{a.url}/v1/acl/policy/{name}", json={"Name": name, "Rules": rules},
                              headers=mgmt, timeout=5)
            assert r.status_code == 200, r.text
            r = requests.post(f"{a.url}/v1/acl/token", json={"Name": name, "Type": "client", "Policies": [name]},
                              headers=mgmt, timeout=5)
            assert r.status_code == 200, r.text
            return r.json()["SecretID"]

        a.token_with = token_with
        yield a
    finally:
        a.stop()


def test_acls_nothing_without_a_token_data_with_one(acl_agent, browser):
    browser.get(acl_agent.url + "/ui/#cluster")
    browser.execute_script("sessionStorage.clear();")
    browser.refresh()
    err = until(browser, "the denial shown", lambda d: (lambda e: e.text if e.is_displayed() and e.text else None)(
        d.find_element(By.ID, "servers-error")))
    assert "Permission denied" in err and "no token set" in err, err
    until(browser, "nodes denied too", lambda d: "Permission denied" in d.find_element(By.ID, "nodes-error").text)
    assert rows(browser, "servers") == [] and rows(browser, "nodes") == []
    shot(browser, "acl-no-token.png")

    browser.find_element(By.ID, "token").send_keys(acl_agent.secret)
    browser.find_element(By.ID, "token-save").click()
    servers = until(browser, "the servers with the token", lambda d: rows(d, "servers") or None)
    assert servers[0][0] == "acl-dev.global" and servers[0][2] == "alive"
    until(browser, "the denial gone", lambda d: not d.find_element(By.ID, "servers-error").is_displayed())
    # Kept in the tab's session storage, never in the URL.
    assert browser.execute_script("return sessionStorage.getItem('caravan.token')") == acl_agent.secret
    assert acl_agent.secret not in browser.current_url
    until(browser, "the client node", lambda d: rows(d, "nodes") or None)
    shot(browser, "acl-token.png")
    # The controls that write show only for a token that may: a read-only token sees the
    # workers and the log tail but neither the scheduler controls nor the profile downloads.
    browser.get(acl_agent.url + "/ui/#agent")
    until(browser, "the controls for a management token", lambda d: d.find_element(By.ID, "sched-form").is_displayed())
    browser.get(acl_agent.url + "/ui/#jobs")
    until(browser, "job registration for a management token", lambda d: d.find_element(By.ID, "job-register").is_displayed())
    browser.get(acl_agent.url + "/ui/#logs")
    until(browser, "the downloads for a management token", lambda d: d.find_element(By.ID, "downloads").is_displayed())
    reader = acl_agent.token_with('agent { policy = "read" }\nnode { policy = "read" }\n')
    browser.find_element(By.ID, "token").send_keys(reader)
    browser.find_element(By.ID, "token-save").click()
    until(browser, "the log tail for agent:read", lambda d: d.find_element(By.ID, "log-state").text.startswith("following"))
    probed = lambda id: lambda d: d.find_element(By.ID, id).get_attribute("data-probed")  # noqa: E731
    assert until(browser, "the download probe", probed("downloads")) == "may not"
    assert not browser.find_element(By.ID, "downloads").is_displayed()
    browser.get(acl_agent.url + "/ui/#agent")
    until(browser, "the workers for agent:read", lambda d: len(rows(d, "workers")) > 0)
    assert until(browser, "the scheduler probe", probed("sched-form")) == "may not"
    assert not browser.find_element(By.ID, "sched-form").is_displayed()
    browser.get(acl_agent.url + "/ui/#jobs")
    assert until(browser, "the registration probe", probed("job-register")) == "may not"
    assert not browser.find_element(By.ID, "job-register").is_displayed()
    shot(browser, "acl-read-only.png")
    browser.get(acl_agent.url + "/ui/#cluster")
    browser.find_element(By.ID, "token-clear").click()
    until(browser, "nothing shown once the token is forgotten", lambda d: rows(d, "servers") == []
          and "Permission denied" in d.find_element(By.ID, "servers-error").text)
