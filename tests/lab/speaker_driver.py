"""A Ray driver for tests/lab/test_speaker.py, run INSIDE the lab's control namespace.

It connects to the lab's Ray once (ray.init costs seconds on this machine) and then serves
one JSON command per stdin line, one JSON answer per stdout line:

    {"cmd": "nodes"}                          alive Ray nodes by raylb.io/node label
    {"cmd": "start", "node": N}               start_speaker on node N (with LAB_KEY), wait for its ping
    {"cmd": "set_keys", "accept": [hex], "sign": hex|null}
                                              membership keys to every speaker -> {node: fingerprints}
    {"cmd": "push", "snapshot": {...}}        push to every speaker -> {node: version}
    {"cmd": "status"}                         {node: status or {"error": ...}}
    {"cmd": "leave", "node": N}               graceful leave, then kill the actor, wait until
                                              its name is free
    {"cmd": "quit"}

Every answer has "ok"; an exception answers {"ok": false, "error": ...} and the driver goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import ray

from raylb import snapshot as snap
from raylb.actors.speaker.actor import find_speakers, speaker_name, start_speaker
from raylb.keyring import KeySet

NODE_LABEL = "raylb.io/node"
CALL_TIMEOUT_S = 10.0
START_TIMEOUT_S = 90.0
NAME_FREE_TIMEOUT_S = 30.0
NAMESPACE = "raylb"
# The membership key of the lab's speakers; tests/lab/test_membership_trust.py rotates it.
LAB_KEY = b"raylb-lab-membership-key-0123456"


def nodes() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for n in ray.nodes():
        name = (n.get("Labels") or {}).get(NODE_LABEL)
        if name and n["Alive"]:
            out[name] = {"id": n["NodeID"], "ip": n["NodeManagerAddress"]}
    return out


def call_all(method: str, *args: Any) -> dict[str, Any]:
    handles = find_speakers(NAMESPACE)
    refs = {name: getattr(h, method).remote(*args) for name, h in handles.items()}
    out: dict[str, Any] = {}
    for name, ref in refs.items():
        try:
            out[name] = ray.get(ref, timeout=CALL_TIMEOUT_S)
        except Exception as err:  # a speaker on a dead node: say so, keep the others
            out[name] = {"error": f"{type(err).__name__}: {err}"[:300]}
    return out


def handle(command: dict[str, Any]) -> dict[str, Any]:
    cmd = command["cmd"]
    if cmd == "nodes":
        return {"nodes": nodes()}
    if cmd == "start":
        node = nodes()[command["node"]]
        keys = KeySet(accept=tuple(bytes.fromhex(k) for k in command.get("accept", [LAB_KEY.hex()])))
        actor = start_speaker(
            node_name=command["node"], node_id=node["id"], node_address=node["ip"], keys=keys, namespace=NAMESPACE
        )
        return {"ping": ray.get(actor.ping.remote(), timeout=START_TIMEOUT_S)}
    if cmd == "push":
        return {"versions": call_all("push", snap.from_dict(command["snapshot"]))}
    if cmd == "set_keys":
        sign = command.get("sign")
        keys = KeySet(accept=tuple(bytes.fromhex(k) for k in command["accept"]), sign=bytes.fromhex(sign) if sign else None)
        return {"keys": call_all("set_keys", keys)}
    if cmd == "status":
        return {"status": call_all("status")}
    if cmd == "leave":
        name = speaker_name(command["node"])
        actor = ray.get_actor(name, namespace=NAMESPACE)
        status = ray.get(actor.leave.remote(), timeout=CALL_TIMEOUT_S)
        ray.kill(actor)
        deadline = time.monotonic() + NAME_FREE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                return {"status": status}
            time.sleep(0.1)
        raise TimeoutError(f"actor {name} still registered {NAME_FREE_TIMEOUT_S} s after ray.kill")
    raise ValueError(f"unknown command {cmd!r}")


def main() -> int:
    # Ray's core writes some notices (a raylet that died, state dumps) straight to file
    # descriptor 1, whatever log_to_driver says. Answers go to a private copy of stdout and
    # fd 1 is pointed at stderr, so nothing but answers ever reaches the test.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(answer: dict[str, Any]) -> None:
        answers.write(json.dumps(answer, default=str) + "\n")
        answers.flush()

    ray.init(address=os.environ["RAY_ADDRESS"], namespace=NAMESPACE, logging_level="ERROR", log_to_driver=False)
    say({"ok": True, "ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            if command.get("cmd") == "quit":
                say({"ok": True})
                break
            answer = {"ok": True, **handle(command)}
        except Exception as err:
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        say(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
