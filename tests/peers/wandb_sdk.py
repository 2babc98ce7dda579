"""Drive the real wandb 0.19.0 public API (wandb.Api) through SN27's operations against a local
endpoint, so the Rust client's requests can be compared with the SDK's.

stdin, one JSON object:
  {"base_url": "http://127.0.0.1:PORT", "entity": str, "project": str,
   "ops": [{"op": "runs", "filters": {...}, "per_page": int},
           {"op": "run", "id": str},
           {"op": "update", "id": str, "set": {key: value}, "display_name": str (optional)},
           {"op": "create", "id": str}]}
The API key comes from WANDB_API_KEY (the caller sets a test key). The entity is passed as an
override, as the Rust client is configured with it, so the SDK sends no Viewer query.

stdout, one JSON object: {"results": [...]}, one per op: run ids for "runs", the run's id and
config for "run", "ok" for "update", the created run's id for "create"; an op that raises gives
{"error": "<exception class>: <message>"}.
"""

import json
import os
import sys

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")

import wandb  # noqa: E402


def main():
    spec = json.load(sys.stdin)
    if not os.environ.get("WANDB_API_KEY"):
        print("WANDB_API_KEY is not set", file=sys.stderr)
        sys.exit(2)
    api = wandb.Api(overrides={"base_url": spec["base_url"], "entity": spec["entity"]}, timeout=10)
    path = f'{spec["entity"]}/{spec["project"]}'
    results = []
    for op in spec["ops"]:
        api.flush()  # SN27 flushes before every query; the SDK caches results otherwise
        try:
            kind = op["op"]
            if kind == "runs":
                runs = api.runs(path, filters=op["filters"], per_page=op.get("per_page", 50))
                results.append([r.id for r in runs])
            elif kind == "run":
                run = api.run(f'{path}/{op["id"]}')
                results.append({"id": run.id, "config": dict(run.config)})
            elif kind == "update":
                run = api.run(f'{path}/{op["id"]}')
                if op.get("display_name"):
                    run.name = op["display_name"]
                run.config.update(op["set"])
                run.update()
                results.append("ok")
            elif kind == "create":
                run = api.create_run(run_id=op["id"], project=spec["project"], entity=spec["entity"])
                results.append(run.id)
            else:
                print(f"unknown op {kind!r}", file=sys.stderr)
                sys.exit(2)
        except Exception as e:  # reported to the caller, which compares behaviour
            results.append({"error": f"{type(e).__name__}: {e}"})
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
