"""Retention under load: how fast the pruner removes old messages, and what it costs intake.

A Junction engine with the benchmark channel of ``mllp_throughput.py`` plus
``retention.message_days``. The load client fills the store, waits until those messages are
old enough, then measures ACK latency at a fixed open-loop rate twice: once alone (the
baseline) and once while ``POST /api/prune`` removes the old messages. Reports both
latencies, the pruning rate and the pruner's batch setting.

    python bench/pruning.py [--messages 50000] [--rate 500] [--batch 25] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from mllp_throughput import CHANNEL, closed_loop_count, open_loop, pct  # noqa: E402

from engine.testing.peers import EngineProcess, free_port  # noqa: E402

AGE_SECS = 20.0


def latency(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 0.5), 3),
        "p99_ms": round(pct(values, 0.99), 3),
        "max_ms": round(max(values) * 1000, 3) if values else 0.0,
        "mean_ms": round(statistics.mean(values) * 1000, 3) if values else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000, help="old messages to prune")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop arrival rate during the runs")
    parser.add_argument("--secs", type=float, default=10.0, help="length of each open-loop run")
    parser.add_argument("--batch", type=int, default=25, help="pruning.batch")
    parser.add_argument("--dir", default=None, help="folder for the engine's project")
    args = parser.parse_args()

    project = Path(tempfile.mkdtemp(prefix="junction-prune-bench-", dir=args.dir))
    (project / "channels").mkdir()
    (project / "config").mkdir()
    port = free_port()
    channel = textwrap.dedent(CHANNEL.format(port=port, fsync="true"))
    channel += f"retention: {{message_days: {AGE_SECS / 86400:.8f}}}\n"
    (project / "channels" / "bench-in.yaml").write_text(channel, encoding="utf-8")
    (project / "config" / "junction.yaml").write_text(
        "store: {type: sqlite}\napi: {listen: '${JUNCTION_API_LISTEN}'}\n"
        f"pruning: {{interval_minutes: 0, batch: {args.batch}}}\n",
        encoding="utf-8",
    )
    results: dict[str, object] = {"messages": args.messages, "rate": args.rate, "batch": args.batch}
    engine = EngineProcess(project, {"JUNCTION_LOG_LEVEL": "WARNING"}).start()
    try:
        engine.address("bench-in")
        sent, _ = asyncio.run(closed_loop_count(port, 32, args.messages, 0))
        deadline = time.monotonic() + 600
        while engine.call("GET", "/api/channels/bench-in")["counters"].get("dest:files:SENT", 0) < sent:
            if time.monotonic() > deadline:
                raise TimeoutError("delivery did not catch up")
            time.sleep(0.2)
        time.sleep(AGE_SECS + 1)
        # the baseline: the same open loop with no pruning
        base = asyncio.run(open_loop(port, args.rate, args.secs, sent))
        sent += len(base)
        results["open_loop_alone"] = latency(base)
        print(f"open loop {args.rate:.0f} msg/s alone:          {results['open_loop_alone']}", flush=True)
        report: dict[str, object] = {}

        def prune() -> None:
            started = time.perf_counter()
            report.update(engine.call("POST", "/api/prune"))
            report["secs"] = time.perf_counter() - started

        pruner = threading.Thread(target=prune)
        pruner.start()
        during = asyncio.run(open_loop(port, args.rate, args.secs, sent))
        pruner.join(timeout=600)
        results["open_loop_while_pruning"] = latency(during)
        print(f"open loop {args.rate:.0f} msg/s while pruning:  {results['open_loop_while_pruning']}", flush=True)
        removed = report["channels"]["bench-in"]["messages"]  # type: ignore[index]
        secs = float(report["secs"])  # type: ignore[arg-type]
        results["pruned"] = {"messages": removed, "secs": round(secs, 2), "msg_s": round(removed / secs)}
        print(f"pruned {removed} messages in {secs:.1f} s ({removed / secs:.0f} msg/s)", flush=True)
        if secs > args.secs:
            print("(pruning outlasted the open-loop run: the second latency covers part of it)", flush=True)
    finally:
        engine.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
