"""MLLP throughput and ACK latency: Junction against the Python floor, in one invocation.

(a) floor: a bare asyncio MLLP server that ACKs without parsing or storing;
(b) Junction: ``python -m engine run`` with one channel (ACK after the durable commit,
    HL7 parse, one file destination delivering).

Both run as subprocesses; this process is the load client (C connections, each sending a
message and waiting for its ACK). Reports msg/s, p50/p99 ACK latency at 1, 8 and 32
connections, the Junction/floor ratio, the ACK path alone at 8 connections (channel paused:
messages stored, processing and delivery held), ACK latency at a fixed open-loop rate, how
long delivery takes to catch up, and the engine's RSS after many messages.

    python bench/mllp_throughput.py [--secs 5] [--rate 500] [--rss-messages 100000] [--dir DIR] [--writer process]

The engine's CPU per message (user and system) is reported with each Junction run: on a
small machine the load client and the kernel share the cores with the engine, and the
system share shows what sockets, file creation and fsync cost there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.store.sqlite import SqliteStoreConfig  # noqa: E402
from engine.testing.peers import EngineProcess, free_port  # noqa: E402

FLOOR_SERVER = r"""
import asyncio, sys
ACK = b"\x0bMSH|^~\\&|J|J|S|S|20260101||ACK|1|P|2.5\rMSA|AA|1\r\x1c\r"
async def handle(reader, writer):
    # The plainest asyncio MLLP server: one frame, one ACK, no parsing, no storing.
    try:
        while True:
            await reader.readuntil(b"\x1c\r")
            writer.write(ACK)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""

CHANNEL = """
    name: bench-in
    storage: production
    source:
      type: mllp
      listen: 127.0.0.1:{port}
    pipeline:
      datatype: hl7v2
    destinations:
      - name: files
        type: file
        directory: var/out/bench
        fsync: {fsync}
"""


def message(n: int) -> bytes:
    return (
        "MSH|^~\\&|EHR|GENERAL HOSP|JUNCTION|ERP|20261122101500||ADT^A01^ADT_A01|"
        f"B{n:09d}|P|2.5.1\r"
        "EVN|A01|20261122101500\r"
        f"PID|1||{n:08d}^^^GH^MR||TESTPATIENT^ALPHA^Q||19700101|F|||1 MAIN ST^^SPRINGFIELD^IL^62701\r"
        "PV1|1|I|4N^401^1^GH||||1234^ATTENDING^ANNE|||MED||||1|||1234^ATTENDING^ANNE|IN|V0001\r"
        "AL1|1|DA|PCN^PENICILLIN|SV|HIVES\r"
    ).encode()


async def _read_ack(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\x1c\r")


async def closed_loop(port: int, connections: int, secs: float, start_n: int) -> tuple[int, list[float]]:
    latencies: list[float] = []
    counter = [start_n]
    stop_at = time.perf_counter() + secs

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                counter[0] += 1
                t0 = time.perf_counter()
                writer.write(b"\x0b" + message(counter[0]) + b"\x1c\r")
                await _read_ack(reader)
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return counter[0], latencies


async def open_loop(port: int, rate: float, secs: float, start_n: int, connections: int = 8) -> list[float]:
    """Fixed arrival rate; latency counted from the scheduled send time (no coordinated omission)."""
    latencies: list[float] = []
    interval = connections / rate
    n = [start_n]

    async def one(offset: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        begin = time.perf_counter() + offset
        k = 0
        try:
            while True:
                scheduled = begin + k * interval
                if scheduled > begin + secs:
                    break
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                n[0] += 1
                writer.write(b"\x0b" + message(n[0]) + b"\x1c\r")
                await _read_ack(reader)
                latencies.append(time.perf_counter() - scheduled)
                k += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(i * interval / connections) for i in range(connections)))
    return latencies


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def cpu_secs(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by process ``pid`` and its live children (the
    store's process writer), all their threads."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for p in [pid, *_children(pid)]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
    return user, system


def _children(pid: int) -> list[int]:
    return sorted(
        {int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()}
    )


def rss_mb(pid: int) -> float:
    """Resident memory of the engine and its live children (the store's process writer)."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def delivered(engine: EngineProcess) -> int:
    return int(engine.call("GET", "/api/channels/bench-in")["counters"].get("dest:files:SENT", 0))


def wait_delivered(engine: EngineProcess, total: int, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if delivered(engine) >= total:
            return time.perf_counter() - t0
        time.sleep(0.1)
    return float("inf")


def measure(pid: int, port: int, connections: int, secs: float, sent: int) -> tuple[int, dict[str, object]]:
    """One closed-loop run against the engine: msg/s, latency and the engine's CPU per message."""
    before = cpu_secs(pid)
    sent, lat = asyncio.run(closed_loop(port, connections, secs, sent))
    after = cpu_secs(pid)
    return sent, {
        "msg_s": round(len(lat) / secs),
        "p50_ms": round(pct(lat, 0.5), 3),
        "p99_ms": round(pct(lat, 0.99), 3),
        # where the engine's time goes (its store writer process included): Python and
        # SQLite (user) against the kernel (sockets, file creation, fsync)
        "cpu_us_per_msg": {
            "user": round((after[0] - before[0]) / max(len(lat), 1) * 1e6),
            "system": round((after[1] - before[1]) / max(len(lat), 1) * 1e6),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--secs", type=float, default=5.0, help="seconds per closed-loop run")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop arrival rate, msg/s")
    parser.add_argument("--rss-messages", type=int, default=0, help="send this many more, then read RSS")
    parser.add_argument("--fsync", choices=["true", "false"], default="true", help="file destination fsync")
    parser.add_argument(
        "--dir",
        default=None,
        help="folder for the engine's project (store and delivered files); default: the system's temp folder",
    )
    parser.add_argument(
        "--writer",
        choices=["thread", "process"],
        default=SqliteStoreConfig().writer,
        help="the SQLite store's writer (store.writer; default: the store's own default here)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results: dict[str, object] = {"secs": args.secs}
    floor_port = free_port()
    floor = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(floor_port)], stdout=subprocess.PIPE)
    assert floor.stdout is not None and floor.stdout.readline().strip() == b"ready"
    try:
        for c in (1, 8, 32):
            _, lat = asyncio.run(closed_loop(floor_port, c, args.secs, 0))
            results[f"floor_c{c}"] = {
                "msg_s": round(len(lat) / args.secs),
                "p50_ms": round(pct(lat, 0.5), 3),
                "p99_ms": round(pct(lat, 0.99), 3),
            }
            print(f"floor     c={c:>2}: {results[f'floor_c{c}']}", flush=True)
    finally:
        floor.terminate()
        floor.wait()

    with tempfile.TemporaryDirectory(prefix="junction-bench-", dir=args.dir) as tmp:
        project = Path(tmp)
        (project / "channels").mkdir()
        port = free_port()
        (project / "channels" / "bench-in.yaml").write_text(
            textwrap.dedent(CHANNEL.format(port=port, fsync=args.fsync)), encoding="utf-8"
        )
        (project / "config").mkdir()
        (project / "config" / "junction.yaml").write_text(
            f"store:\n  type: sqlite\n  writer: {args.writer}\napi:\n  listen: ${{JUNCTION_API_LISTEN}}\n",
            encoding="utf-8",
        )
        results["writer"] = args.writer
        engine = EngineProcess(project, {"JUNCTION_LOG_LEVEL": "WARNING"}).start()
        try:
            engine.address("bench-in")
            sent = 0
            assert engine.proc is not None
            for c in (1, 8, 32):
                sent, run = measure(engine.proc.pid, port, c, args.secs, sent)
                # Did delivery keep up? What was still queued when the senders stopped, and
                # how long the file destination took to deliver it.
                run["queued_at_end"] = sent - delivered(engine)
                run["catch_up_secs"] = round(wait_delivered(engine, sent), 2)
                results[f"junction_c{c}"] = run
                print(f"junction  c={c:>2}: {run}", flush=True)
            # The ACK path alone (channel paused: listening and storing, processing and
            # delivery held), to show what intake costs apart from the pipeline behind it.
            engine.call("POST", "/api/channels/bench-in/pause")
            sent, results["junction_ack_path_c8"] = measure(engine.proc.pid, port, 8, args.secs, sent)
            engine.call("POST", "/api/channels/bench-in/resume")
            print(f"ACK path (paused) c= 8: {results['junction_ack_path_c8']}", flush=True)
            catch_up = wait_delivered(engine, sent)
            results["delivery_catch_up_secs"] = round(catch_up, 2)
            print(f"delivery caught up {catch_up:.2f}s after the last closed-loop run ({sent} messages)")
            lat = asyncio.run(open_loop(port, args.rate, args.secs * 2, sent))
            sent += len(lat)
            results["open_loop"] = {
                "rate": args.rate,
                "n": len(lat),
                "p50_ms": round(pct(lat, 0.5), 3),
                "p99_ms": round(pct(lat, 0.99), 3),
                "mean_ms": round(statistics.mean(lat) * 1000, 3),
            }
            print(f"open loop {args.rate:.0f} msg/s: {results['open_loop']}", flush=True)
            if args.rss_messages:
                remaining = args.rss_messages
                while remaining > 0:
                    before = sent
                    sent, _ = asyncio.run(closed_loop_count(port, 8, min(remaining, 20000), sent))
                    remaining -= max(sent - before, 1)
                wait_delivered(engine, sent)
                assert engine.proc is not None
                results["rss_mb_after"] = {"messages": sent, "rss_mb": round(rss_mb(engine.proc.pid), 1)}
                print(f"RSS after {sent} messages: {results['rss_mb_after']}", flush=True)
        finally:
            engine.stop()
    for c in (1, 8, 32):
        f = results[f"floor_c{c}"]["msg_s"]  # type: ignore[index]
        j = results[f"junction_c{c}"]["msg_s"]  # type: ignore[index]
        results[f"ratio_c{c}"] = round(j / f, 3) if f else None
        print(f"Junction/floor at {c:>2} connections: {results[f'ratio_c{c}']}")
    if args.json:
        print(json.dumps(results, indent=2))


async def closed_loop_count(port: int, connections: int, total: int, start_n: int) -> tuple[int, list[float]]:
    """Send exactly ``total`` messages over ``connections`` connections."""
    per = total // connections
    counter = [start_n]

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(per):
                counter[0] += 1
                writer.write(b"\x0b" + message(counter[0]) + b"\x1c\r")
                await _read_ack(reader)
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return counter[0], []


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
