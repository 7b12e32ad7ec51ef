"""python-nomad, unchanged, against a real caravan agent.

Run by `cargo xtask ci` with CARAVAN_BIN pointing at the built binary.
"""

import os
import socket
import subprocess
import tempfile
import time

import nomad
import pytest
import requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_agent(*extra, hcl=""):
    """Runs `caravan agent -dev` on free ports (plus `hcl`); yields its ports; always stops it."""
    os.environ.pop("NOMAD_ADDR", None)
    os.environ.pop("NOMAD_TOKEN", None)
    http, rpc, serf = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "agent.hcl")
        with open(cfg, "w") as f:
            f.write(f"ports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\n{hcl}")
        proc = subprocess.Popen(
            [os.environ["CARAVAN_BIN"], "agent", "-dev", *extra, f"-config={cfg}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    # 200 once the one-server Raft cluster has its leader.
                    r = requests.get(f"http://127.0.0.1:{http}/v1/agent/health", timeout=1)
                    if r.status_code == 200:
                        break
                    assert time.monotonic() < deadline, f"agent unhealthy: {r.text}"
                    time.sleep(0.02)
                except requests.ConnectionError:
                    assert time.monotonic() < deadline, "agent did not start"
                    assert proc.poll() is None, "agent exited"
                    time.sleep(0.02)
            yield {"http": http, "rpc": rpc}
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def agent():
    yield from start_agent()


def client(agent):
    return nomad.Nomad(host="127.0.0.1", port=agent["http"], timeout=10)


def test_get_agent(agent):
    info = client(agent).agent.get_agent()
    assert info["config"]["Ports"]["HTTP"] == agent["http"]
    assert info["member"]["Status"] == "alive"
    assert info["stats"]["nomad"]["leader"] == "true"


def test_status_leader_and_peers(agent):
    n = client(agent)
    assert n.status.leader.get_leader() == f"127.0.0.1:{agent['rpc']}"
    assert n.status.peers.get_peers() == [f"127.0.0.1:{agent['rpc']}"]
    raft = n.agent.get_agent()["stats"]["raft"]
    assert raft["state"] == "Leader"
    assert raft["num_peers"] == "0"


def test_get_servers(agent):
    assert client(agent).agent.get_servers() == [f"127.0.0.1:{agent['rpc']}"]


def test_update_servers(agent):
    n = client(agent)
    status = n.agent.update_servers([f"127.0.0.1:{agent['rpc']}"])
    assert status == 200
    assert n.agent.get_servers() == [f"127.0.0.1:{agent['rpc']}"]


def test_update_servers_unreachable(agent):
    n = client(agent)
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException) as err:
        n.agent.update_servers([dead])
    assert "failed ping" in err.value.nomad_resp.text
    assert n.agent.get_servers() == [f"127.0.0.1:{agent['rpc']}"]


def test_members_join_force_leave(agent):
    n = client(agent)
    members = n.agent.get_members()
    assert members["ServerRegion"] == "global"
    assert [m["Status"] for m in members["Members"]] == ["alive"]
    name = members["Members"][0]["Name"]
    dead = f"127.0.0.1:{free_port()}"
    joined = n.agent.join_agent([dead])
    assert joined["num_joined"] == 0
    assert joined["error"].startswith("1 error occurred:")
    assert n.agent.force_leave("nobody.global") == 200
    assert n.agent.get_members()["Members"][0]["Name"] == name


@pytest.fixture
def acl_agent():
    yield from start_agent("-acl-enabled")


def test_acl_bootstrap_policy_token(acl_agent):
    anon = nomad.Nomad(host="127.0.0.1", port=acl_agent["http"], timeout=10)
    with pytest.raises(nomad.api.exceptions.URLNotAuthorizedNomadException):
        anon.agent.get_agent()
    boot = anon.acl.generate_bootstrap()
    assert boot["Type"] == "management"
    admin = nomad.Nomad(host="127.0.0.1", port=acl_agent["http"], token=boot["SecretID"], timeout=10)
    resp = admin.acl.create_policy(
        "readers", {"Name": "readers", "Description": "", "Rules": 'agent {\n  policy = "read"\n}'}
    )
    assert resp.status_code == 200
    tok = admin.acl.create_token({"Name": "r", "Type": "client", "Policies": ["readers"]})
    reader = nomad.Nomad(host="127.0.0.1", port=acl_agent["http"], token=tok["SecretID"], timeout=10)
    assert reader.agent.get_agent()["config"]["ACL"]["Enabled"] is True
    assert reader.acl.get_self_token()["Policies"] == ["readers"]
    with pytest.raises(nomad.api.exceptions.URLNotAuthorizedNomadException):
        reader.agent.get_members()
    assert [p["Name"] for p in admin.acl.get_policies()] == ["readers"]


def test_register_job_and_see_allocations(agent):
    n = client(agent)
    # Healthy means a leader, not that the dev agent's node has registered: a job evaluated
    # before it has no node to place on.
    deadline = time.monotonic() + 15
    while not n.nodes.get_nodes():
        assert time.monotonic() < deadline, "the dev agent's node did not register"
        time.sleep(0.05)
    job = {
        "Job": {
            "ID": "web",
            "Name": "web",
            "Type": "service",
            "Datacenters": ["dc1"],
            "TaskGroups": [
                {
                    "Name": "g",
                    "Count": 2,
                    "Tasks": [{"Name": "t", "Driver": "docker", "Resources": {"CPU": 100, "MemoryMB": 64}}],
                }
            ],
        }
    }
    reply = n.job.register_job("web", job)
    assert reply["EvalID"]
    deadline = time.monotonic() + 10
    while n.evaluation.get_evaluation(reply["EvalID"])["Status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    allocs = n.job.get_allocations("web")
    assert len(allocs) == 2
    assert {a["DesiredStatus"] for a in allocs} == {"run"}
    assert [j["ID"] for j in n.jobs.get_jobs()] == ["web"]
    workers = requests.get(f"http://127.0.0.1:{agent['http']}/v1/agent/schedulers", timeout=5).json()
    assert {w["status"] for w in workers["schedulers"]} <= {"Started", "Paused"}


def test_client_only_agent_registers_and_answers_for_its_servers(agent):
    """A client-only agent next to the dev server: its node registers and heartbeats, and
    python-nomad's node, nodes and agent calls through it answer (cluster routes are passed
    to its server)."""
    http = free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "client.hcl")
        with open(cfg, "w") as f:
            f.write(
                f'name = "py-client"\nbind_addr = "127.0.0.1"\n'
                f"ports {{\n  http = {http}\n  rpc = {free_port()}\n  serf = {free_port()}\n}}\n"
            )
        proc = subprocess.Popen(
            [os.environ["CARAVAN_BIN"], "agent", "-client", f"-data-dir={d}",
             f"-servers=127.0.0.1:{agent['rpc']}", f"-config={cfg}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            n = nomad.Nomad(host="127.0.0.1", port=http, timeout=10)
            deadline = time.monotonic() + 15
            while True:
                try:
                    nodes = n.nodes.get_nodes()
                    mine = [x for x in nodes if x["Name"] == "py-client"]
                    if mine and mine[0]["Status"] == "ready":
                        break
                except (requests.ConnectionError, nomad.api.exceptions.BaseNomadException):
                    assert proc.poll() is None, "client agent exited"
                assert time.monotonic() < deadline, "the client's node did not register"
                time.sleep(0.1)
            node_id = mine[0]["ID"]
            assert n.node.get_node(node_id)["Name"] == "py-client"
            assert "SecretID" not in n.node.get_node(node_id)
            assert n.node.get_allocations(node_id) == []
            info = n.agent.get_agent()
            assert info["stats"]["client"]["node_id"] == node_id
            assert info["stats"]["client"]["known_servers"] == f"127.0.0.1:{agent['rpc']}"
            assert n.agent.get_servers() == [f"127.0.0.1:{agent['rpc']}"]
            assert n.agent.get_members()["Members"][0]["Status"] == "alive"
            assert n.status.leader.get_leader() == f"127.0.0.1:{agent['rpc']}"
            assert len(n.nodes.get_nodes()) == 2  # the dev agent's own node and this one
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def metrics_agent():
    yield from start_agent(hcl='telemetry {\n  prometheus_metrics = true\n  collection_interval = "100ms"\n}\n')


def test_metrics_get_metrics(metrics_agent):
    n = client(metrics_agent)
    n.agent.get_agent()
    # Gauges are sampled every 100 ms here: wait (bounded) for one taken after the election.
    deadline = time.monotonic() + 5
    while True:
        m = n.metrics.get_metrics()
        leader = [g["Value"] for g in m["Gauges"] if g["Name"] == "nomad.raft.leader"]
        if leader == [1] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert {"Timestamp", "Gauges", "Points", "Counters", "Samples"} <= set(m)
    requests_by_route = {
        c["Labels"]["route"]: c for c in m["Counters"] if c["Name"] == "nomad.http.requests"
    }
    assert requests_by_route["/v1/agent/self"]["Count"] >= 1
    assert requests_by_route["/v1/agent/self"]["Labels"]["code"] == "200"
    durations = [s for s in m["Samples"] if s["Name"] == "nomad.http.request_duration"]
    assert durations and all(s["Count"] >= 1 and s["Max"] >= s["Min"] >= 0 for s in durations)
    gauges = {g["Name"]: g["Value"] for g in m["Gauges"]}
    assert gauges["nomad.runtime.num_goroutines"] > 0
    assert gauges["nomad.runtime.num_threads"] > 0
    assert gauges["nomad.process.open_fds"] > 0
    # The dev agent is its one-server cluster's leader, with an empty broker.
    assert gauges["nomad.raft.leader"] == 1
    assert gauges["nomad.raft.term"] >= 1
    assert gauges["nomad.raft.commitIndex"] >= 1
    assert gauges["nomad.raft.peers"] == 1
    assert gauges["nomad.nomad.broker.total_ready"] == 0
    assert gauges["nomad.nomad.broker.total_unacked"] == 0


def test_metrics_cover_raft_workers_gossip_and_heartbeats(metrics_agent):
    """A job placed on the dev agent leaves Raft, worker, gossip and heartbeat series."""
    n = client(metrics_agent)
    job = {"Job": {"ID": "m", "Name": "m", "Type": "service", "Datacenters": ["dc1"],
                   "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [
                       {"Name": "t", "Driver": "docker", "Resources": {"CPU": 10, "MemoryMB": 16}}]}]}}
    reply = n.job.register_job("m", job)
    deadline = time.monotonic() + 10
    while n.evaluation.get_evaluation(reply["EvalID"])["Status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    want_samples = {"nomad.raft.commitTime", "nomad.raft.fsm.apply",
                    "nomad.nomad.worker.dequeue_eval", "nomad.nomad.worker.invoke_scheduler.service",
                    "nomad.nomad.worker.send_ack"}
    deadline = time.monotonic() + 10
    while True:
        m = n.metrics.get_metrics()
        samples = {s["Name"]: s for s in m["Samples"]}
        gauges = {(g["Name"], g["Labels"].get("status")): g["Value"] for g in m["Gauges"]}
        counters = {c["Name"]: c for c in m["Counters"]}
        ready = (want_samples <= set(samples)
                 and gauges.get(("nomad.nomad.heartbeat.active", None)) == 1
                 and "nomad.nomad.heartbeat.received" in counters)
        if ready or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert want_samples <= set(samples), sorted(samples)
    for name in want_samples:
        assert samples[name]["Count"] >= 1 and samples[name]["Max"] >= samples[name]["Min"] >= 0
    assert counters["nomad.raft.apply"]["Count"] >= 1
    # The dev agent's own node heartbeats to its leader, which runs its timer.
    assert gauges[("nomad.nomad.heartbeat.active", None)] == 1
    assert counters["nomad.nomad.heartbeat.received"]["Count"] >= 1
    # One gossip member, alive; the traffic counters exist (a lone member sends nothing).
    assert gauges[("nomad.serf.members", "alive")] == 1
    assert gauges[("nomad.serf.members", "failed")] == 0
    assert gauges[("nomad.nomad.broker.service_ready", None)] >= 0
    assert {"nomad.memberlist.udp.sent", "nomad.memberlist.probeNode",
            "nomad.memberlist.decrypt_failures"} <= set(counters)


def test_metrics_prometheus_text_parses(metrics_agent):
    from prometheus_client.parser import text_string_to_metric_families

    base = f"http://127.0.0.1:{metrics_agent['http']}"
    requests.get(f"{base}/v1/agent/self", timeout=5)
    r = requests.get(f"{base}/v1/metrics?format=prometheus", timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert families["nomad_http_requests"].type == "counter"
    routes = {s.labels["route"] for s in families["nomad_http_requests"].samples}
    assert "/v1/agent/self" in routes
    histogram = families["nomad_http_request_duration"]
    assert histogram.type == "histogram"
    names = {s.name for s in histogram.samples}
    assert {"nomad_http_request_duration_bucket", "nomad_http_request_duration_sum",
            "nomad_http_request_duration_count"} <= names
    assert families["nomad_runtime_num_goroutines"].type == "gauge"


def test_metrics_prometheus_off_is_415(agent):
    r = requests.get(f"http://127.0.0.1:{agent['http']}/v1/metrics?format=prometheus", timeout=5)
    assert (r.status_code, r.text) == (415, "Prometheus is not enabled")
