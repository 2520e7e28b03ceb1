#!/usr/bin/env python3
"""A Python agent backend publishing one whole run to agentcast with the standard library
only (urllib): POST /v1/publish with batching (arrays of events), an idempotency key on each
event so a retried batch is never shown twice, and retries with backoff on 503/network errors.

    python3 examples/python_agent.py --url http://127.0.0.1:8080 --user u1 [--api-key K]

Over https (agentcastd --tls-cert), a private CA is given the standard way:
SSL_CERT_FILE=ca.pem python3 examples/python_agent.py --url https://HOST:PORT ...
"""
import argparse
import json
import time
import urllib.error
import urllib.request
import uuid


class Publisher:
    def __init__(self, url, api_key=None, batch=8):
        self.url = url.rstrip("/") + "/v1/publish"
        self.api_key = api_key
        self.batch = batch
        self.pending = []

    def emit(self, event):
        event.setdefault("idempotency_key", str(uuid.uuid4()))
        self.pending.append(event)
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self):
        if not self.pending:
            return []
        body = json.dumps(self.pending).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        for attempt in range(5):
            req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=5) as res:
                    replies = json.load(res)
                    self.pending = []
                    return replies
            except urllib.error.HTTPError as e:
                reason = json.load(e).get("error", "")
                if e.code != 503:  # 4xx: the event is wrong; retrying will not help
                    raise SystemExit(f"publish refused: {e.code} {reason}")
            except (urllib.error.URLError, TimeoutError):
                pass
            time.sleep(0.1 * 2 ** attempt)  # same idempotency keys: no duplicates
        raise SystemExit("publish failed after retries")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--user", default="u1")
    ap.add_argument("--api-key")
    ap.add_argument("--thread", default="python-thread")
    args = ap.parse_args()

    pub = Publisher(args.url, args.api_key)
    run = "py-" + uuid.uuid4().hex[:12]
    base = {"user_id": args.user, "run_id": run, "thread_id": args.thread}
    pub.emit({**base, "type": "agent_started", "data": {"agent": "python-agent"}})
    for word in "Let me look that up in the weather tool.".split():
        pub.emit({**base, "type": "agent_thinking", "data": {"thought": word + " "}})
    pub.emit({**base, "type": "tool_executing",
              "data": {"tool": "weather", "tool_call_id": "call-1", "args": {"city": "Oslo"}}})
    pub.flush()  # the person sees the tool start now, not with the result
    time.sleep(0.2)
    pub.emit({**base, "type": "tool_completed",
              "data": {"tool": "weather", "tool_call_id": "call-1", "result": {"celsius": -3}}})
    pub.emit({**base, "type": "agent_completed", "data": {"result": "It is -3 °C in Oslo."}})
    replies = pub.flush()
    print(json.dumps({"run_id": run, "last_seq": replies[-1]["seq"]}))


if __name__ == "__main__":
    main()
