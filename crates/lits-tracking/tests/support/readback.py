"""Reads a run back from an MLflow tracking server with MLflow's own Python client.

usage: readback.py TRACKING_URI RUN_ID DOWNLOAD_DIR [SKIP_HISTORY_PREFIX]

Prints one JSON object: run name, experiment name, status, params, tags, the latest value
of every metric, the full history of every metric (except those whose key starts with
SKIP_HISTORY_PREFIX: one call per key is slow for very many keys) as sorted
[step, timestamp, value] triples (non-finite values as the strings "nan", "inf", "-inf",
since JSON has no such numbers) and the SHA-256 of every artifact file after downloading it.
"""

import hashlib
import json
import math
import os
import sys

from mlflow.tracking import MlflowClient


def value(v):
    return v if math.isfinite(v) else str(v)


def main():
    uri, run_id, download_dir = sys.argv[1:4]
    skip = sys.argv[4] if len(sys.argv) > 4 else None
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    out = {
        "run_name": run.info.run_name,
        "experiment": client.get_experiment(run.info.experiment_id).name,
        "status": run.info.status,
        "end_time": run.info.end_time,
        "params": run.data.params,
        "tags": run.data.tags,
        "latest": {k: value(v) for k, v in run.data.metrics.items()},
        "metrics": {},
        "artifacts": {},
    }
    for key in run.data.metrics:
        if skip and key.startswith(skip):
            continue
        history = client.get_metric_history(run_id, key)
        out["metrics"][key] = sorted([m.step, m.timestamp, value(m.value)] for m in history)

    def walk(path):
        for f in client.list_artifacts(run_id, path):
            if f.is_dir:
                walk(f.path)
            else:
                local = client.download_artifacts(run_id, f.path, download_dir)
                with open(local, "rb") as fh:
                    out["artifacts"][f.path] = hashlib.sha256(fh.read()).hexdigest()

    os.makedirs(download_dir, exist_ok=True)
    walk(None)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
