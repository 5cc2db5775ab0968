"""The ``junction`` command: a thin client of the admin API, plus offline commands.

Exit codes: 0 success; 1 the command ran and found problems (invalid YAML, a NACK, an
action refused); 2 usage errors; 3 the engine could not be reached or refused the token.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import click

from engine import __version__

EXIT_PROBLEMS = 1
EXIT_UNREACHABLE = 3
ACTIONS = ("start", "stop", "pause", "resume", "deploy", "undeploy", "redeploy")


def _project(ctx: click.Context) -> Path:
    return Path(ctx.obj["project"]).resolve()


def _settings_path(project: Path, config: str | None) -> Path:
    return Path(config) if config else project / "config" / "junction.yaml"


class Client:
    """Minimal JSON client of the admin API (stdlib only, so the CLI starts fast)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        raw: bytes | None = None,
        timeout: float = 60.0,
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        url = self.base_url + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
        if data is None and method in ("POST", "PUT"):
            data = b""
        if not url.startswith(("http://", "https://")):
            _fail(f"the admin API URL must be http(s): {self.base_url}", 2)
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - scheme checked above
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"{}")
            except json.JSONDecodeError:
                payload = {}
            detail = payload.get("detail") or exc.reason
            for line in payload.get("errors", []):
                click.echo(line, err=True)
            if exc.code == 401:
                _fail(f"the engine refused the token ({detail})", EXIT_UNREACHABLE)
            _fail(f"{payload.get('title', 'error')}: {detail}", EXIT_PROBLEMS)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            _fail(f"cannot reach the engine at {self.base_url} ({exc}); is `junction run` running?", EXIT_UNREACHABLE)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _client(ctx: click.Context) -> Client:
    from engine.runtime.settings import load_settings

    project = _project(ctx)
    settings = load_settings(_settings_path(project, ctx.obj.get("config")))
    url = ctx.obj.get("api") or os.environ.get("JUNCTION_API") or f"http://{settings.api.listen}"
    token = os.environ.get("JUNCTION_API_TOKEN", "")
    if not token:
        path = project / settings.api.token_file
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError:
            _fail(f"no API token: set JUNCTION_API_TOKEN or start the engine once to create {path}", EXIT_UNREACHABLE)
    return Client(url, token)


def _table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)] if rows else map(len, headers)
    widths = list(widths)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(fmt.format(*headers))
    for row in rows:
        click.echo(fmt.format(*[str(x) for x in row]))


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


@click.group()
@click.version_option(__version__, prog_name="junction")
@click.option(
    "--project",
    "-p",
    default=lambda: os.environ.get("JUNCTION_HOME", "."),
    show_default="current folder",
    help="Project folder holding channels/, mappings/ and config/.",
)
@click.option("--config", "-c", default=None, help="Engine settings file (default: PROJECT/config/junction.yaml).")
@click.option("--api", default=None, help="Admin API URL (default: from the settings, or JUNCTION_API).")
@click.pass_context
def main(ctx: click.Context, project: str, config: str | None, api: str | None) -> None:
    """Junction: a healthcare interface engine."""
    ctx.ensure_object(dict)
    ctx.obj.update(project=project, config=config, api=api)


# -- run -----------------------------------------------------------------------------------


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Start the engine with every channel in channels/ and the admin API."""
    import asyncio

    from engine.api.server import serve
    from engine.core.errors import ConfigError
    from engine.core.logs import configure
    from engine.runtime.settings import load_settings

    project = _project(ctx)
    try:
        settings = load_settings(_settings_path(project, ctx.obj.get("config")))
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_PROBLEMS)
    configure(settings.log.level, settings.log.format)
    try:
        asyncio.run(serve(project, settings))
    except OSError as exc:
        _fail(f"cannot start: {exc}", EXIT_PROBLEMS)


# -- offline: validate, plugins ------------------------------------------------------------


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.pass_context
def validate(ctx: click.Context, paths: tuple[str, ...]) -> None:
    """Check channel, mapping and partner files offline; print every error as file:line:col, exit 1 if any."""
    from engine.core.errors import ConfigError
    from engine.core.loader import channel_files, load_channel

    project = _project(ctx)
    folders = (project / "channels", project / "mappings", project / "config" / "partners")
    defaults = [d for d in folders if d.is_dir()]
    targets = channel_files(paths or defaults)
    errors = 0
    channels = []
    for file in [f for f in targets if not _is_mapping(f) and not _is_partner(f)]:
        try:
            channels.append(load_channel(file))
        except ConfigError as exc:
            for diagnostic in exc.diagnostics:
                click.echo(str(diagnostic))
            errors += len(exc.diagnostics)
    datatypes = _mapping_datatypes(channels, project)
    for file in [f for f in targets if _is_mapping(f) or _is_partner(f)]:
        try:
            if _is_partner(file):
                from engine.edi.partners import load_partner

                load_partner(file)
            else:
                _check_mapping(file, datatypes.get(file.resolve()), project)
        except ConfigError as exc:
            for diagnostic in exc.diagnostics:
                click.echo(str(diagnostic))
            errors += len(exc.diagnostics)
    if errors:
        click.echo(f"{errors} error(s) in {len(targets)} file(s)", err=True)
        sys.exit(EXIT_PROBLEMS)
    click.echo(f"ok: {len(targets)} file(s) valid", err=True)


def _is_mapping(file: Path) -> bool:
    return "mappings" in file.parts


def _is_partner(file: Path) -> bool:
    return file.parent.name == "partners" and file.parent.parent.name == "config"


def _mapping_datatypes(channels: list[Any], project: Path) -> dict[Path, Any]:
    """Mapping file -> the data type config of a channel that runs it (its layout decides paths)."""
    found: dict[Path, Any] = {}

    def visit(transform: Any, datatype: Any) -> None:
        if transform is None:
            return
        if getattr(transform, "type", "") == "mapping":
            found.setdefault((project / transform.file).resolve(), datatype)
        for index, step in enumerate(getattr(transform, "steps", None) or []):
            visit(step, datatype if index == 0 else None)  # later chain steps read JSON

    for channel in channels:
        visit(channel.pipeline.transform, channel.pipeline.datatype)
        for destination in channel.destinations:
            visit(destination.transform, channel.pipeline.datatype)
    return found


def _check_mapping(file: Path, datatype_config: Any = None, project: Path | None = None) -> None:
    """Compile a mapping file (raises ConfigError), checking paths with the data type of a channel
    that runs it, or the mapping's ``source`` data type with default settings."""
    import yaml

    from engine.core import registry
    from engine.mapping import compile_mapping

    check = None
    try:
        if datatype_config is not None:
            spec = registry.get("datatype", datatype_config.type)
            factory = spec.load_factory()
            try:
                datatype = factory(datatype_config, base_dir=project)
            except TypeError:
                datatype = factory(datatype_config)
        else:
            source = (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("source")
            spec = registry.get("datatype", str(source))
            datatype = spec.load_factory()(spec.config.model_validate({"type": spec.name}))
        check = getattr(datatype, "check_path", None)
    except (yaml.YAMLError, OSError, AttributeError, registry.UnknownPlugin):
        pass  # compile_mapping reports the problem with its position
    compile_mapping(file, models=registry.models(), check_path=check)


@main.group()
def plugins() -> None:
    """List plug-ins and print the channel JSON Schema."""


@plugins.command("list")
@click.option("--kind", type=click.Choice(["source", "destination", "datatype", "transform", "store"]))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def plugins_list(kind: str | None, fmt: str) -> None:
    """Every registered plug-in with its summary."""
    from engine.core import registry

    specs = [s for s in registry.all_specs() if kind is None or s.kind == kind]
    if fmt == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "kind": s.kind,
                        "name": s.name,
                        "summary": s.summary,
                        "status": s.status,
                        "since": s.since,
                        "fields": sorted(s.config.model_fields),
                    }
                    for s in specs
                ],
                indent=2,
            )
        )
        return
    _table([[s.kind, s.name, s.status, s.summary] for s in specs], ["KIND", "NAME", "STATUS", "SUMMARY"])


@plugins.command("schema")
def plugins_schema() -> None:
    """JSON Schema of channel files (for editors and CI)."""
    from engine.core.schema import channel_schema

    click.echo(json.dumps(channel_schema(), indent=2))


# -- channels ------------------------------------------------------------------------------


def _channel_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for ch in items:
        counters = ch.get("counters", {})
        source = ch.get("source") or {}
        rows.append(
            [
                ch["name"],
                ch["state"],
                source.get("type") or "-",
                source.get("address") or "-",
                str(
                    counters.get("RECEIVED", 0)
                    + sum(counters.get(s, 0) for s in ("TRANSFORMED", "FILTERED", "ERROR", "EXCEPTION"))
                ),
                str(sum(v for k, v in counters.items() if k.startswith("dest:") and k.endswith(":QUEUED"))),
                str(sum(v for k, v in counters.items() if k.startswith("dest:") and k.endswith(":SENT"))),
                str(
                    counters.get("ERROR", 0)
                    + sum(v for k, v in counters.items() if k.startswith("dest:") and k.endswith(":ERROR"))
                ),
            ]
        )
    return rows


@main.group()
def channel() -> None:
    """List channels and start, stop, pause, resume, deploy or undeploy them."""


@channel.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def channel_list(ctx: click.Context, as_json: bool) -> None:
    """Every channel with its source, state and counters."""
    items = _client(ctx).call("GET", "/api/channels")
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _table(_channel_rows(items), ["CHANNEL", "STATE", "SOURCE", "LISTENING", "RECEIVED", "QUEUED", "SENT", "ERRORS"])


@channel.command("status")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def channel_status(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """Status of one channel (or all) with per-destination counters."""
    client = _client(ctx)
    items = [client.call("GET", f"/api/channels/{name}")] if name else client.call("GET", "/api/channels")
    if as_json:
        click.echo(json.dumps(items if not name else items[0], indent=2))
        return
    for ch in items:
        source = ch.get("source") or {}
        click.echo(f"{ch['name']}: {ch['state']}  source={source.get('type', '-')} {source.get('address') or ''}")
        if source.get("problem"):
            click.echo(f"  source PROBLEM: {source['problem']}")
        if (ch.get("processing") or {}).get("problem"):
            click.echo(f"  processing PROBLEM: {ch['processing']['problem']}")
        for alert in ch.get("alerts") or []:
            click.echo("  " + _alert_line(alert))
        counters = ch.get("counters", {})
        plain = {k: v for k, v in counters.items() if not k.startswith("dest:")}
        click.echo("  messages: " + (", ".join(f"{k.lower()}={v}" for k, v in sorted(plain.items())) or "none"))
        for dest in ch.get("destinations", []):
            prefix = f"dest:{dest['name']}:"
            parts = ", ".join(
                f"{k[len(prefix) :].lower()}={v}" for k, v in sorted(counters.items()) if k.startswith(prefix)
            )
            warn = f"  PROBLEM: {dest['problem']}" if dest.get("problem") else ""
            click.echo(f"  -> {dest['name']} ({dest['type']}): {parts or 'nothing yet'}{warn}")


def _alert_line(alert: dict[str, Any]) -> str:
    """One raised threshold alert of ``junction channel status``."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(alert.get("since") or 0)))
    value, threshold = alert.get("value"), alert.get("threshold")
    event = alert.get("event", "?")
    if event == "errors":
        what = f"{value} errors in {alert.get('window_minutes')} min (threshold {threshold})"
    elif event == "queue-age":
        what = f"oldest queued {value} min ago (threshold {threshold} min)"
    else:
        what = f"{value} queued (threshold {threshold})"
    where = f" -> {alert['destination']}" if alert.get("destination") else ""
    return f"ALERT {event}{where}: {what} since {since}"


def _channel_action(action: str) -> click.Command:
    @click.argument("name", required=False)
    @click.option("--all", "all_", is_flag=True, help="Every channel.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def command(ctx: click.Context, name: str | None, all_: bool, as_json: bool) -> None:
        if bool(name) == all_:
            raise click.UsageError("give a channel NAME or --all")
        client = _client(ctx)
        if all_ and action in ("deploy", "redeploy"):
            result = client.call("POST", "/api/channels/_deploy")
            if as_json:
                click.echo(json.dumps(result, indent=2))
            else:
                click.echo(f"deployed: {', '.join(result['deployed']) or 'none'}")
                for failed in result["failed"]:
                    for line in failed["errors"]:
                        click.echo(line, err=True)
            sys.exit(EXIT_PROBLEMS if result["failed"] else 0)
        names = [c["name"] for c in client.call("GET", "/api/channels")] if all_ else [name]
        results = [client.call("POST", f"/api/channels/{n}/{action}") for n in names if n]
        if as_json:
            click.echo(json.dumps(results if all_ else results[0], indent=2))
            return
        for result in results:
            click.echo(f"{result['name']}: {result['state']}")

    command.__doc__ = f"{action.capitalize()} a channel (NAME or --all)."
    return click.command(action)(command)


for _action in ACTIONS:
    channel.add_command(_channel_action(_action))


# -- messages ------------------------------------------------------------------------------


def _parse_time(value: str | None) -> float | None:
    """Epoch seconds, ISO 8601 (2026-11-22T10:00), or a relative age like 15m, 2h, 1d."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return time.time() - int(value[:-1]) * units[value[-1]]
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected epoch seconds, ISO 8601 or an age like 15m/2h/1d") from None
    return parsed.timestamp()


def _filters(
    channel: str | None, status: str | None, since: str | None, until: str | None, control_id: str | None, limit: int
) -> dict[str, Any]:
    return {
        "channel": channel,
        "status": status.upper() if status else None,
        "since": _parse_time(since),
        "until": _parse_time(until),
        "control_id": control_id,
        "limit": limit,
    }


def _filter_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option("--channel", help="Channel name."),
            click.option("--status", help="RECEIVED, FILTERED, TRANSFORMED, QUEUED, SENT, ERROR or EXCEPTION."),
            click.option("--since", help="Received at or after (epoch, ISO 8601, or an age: 15m, 2h, 1d)."),
            click.option("--until", help="Received before (same forms)."),
            click.option("--control-id", help="Control id (MSH-10, ISA13 ...)."),
            click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000)),
        ]
    ):
        func = option(func)
    return func


@main.group()
def message() -> None:
    """Search, show and reprocess stored messages."""


@message.command("list")
@_filter_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def message_list(
    ctx: click.Context,
    channel: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    control_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Messages matching the filters, newest first."""
    items = _client(ctx).call("GET", "/api/messages", _filters(channel, status, since, until, control_id, limit))
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    rows = [
        [
            m["id"],
            _when(m["received_at"]),
            m["channel"],
            m["status"],
            m["control_id"] or "-",
            ",".join(f"{k}={v}" for k, v in m["destinations"].items()) or "-",
            (m["error"] or "")[:60],
        ]
        for m in items
    ]
    _table(rows, ["ID", "RECEIVED", "CHANNEL", "STATUS", "CONTROL ID", "DESTINATIONS", "ERROR"])


@message.command("show")
@click.argument("message_id")
@click.option("--content", is_flag=True, help="Include message content (may hold PHI; the view is audited).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def message_show(ctx: click.Context, message_id: str, content: bool, as_json: bool) -> None:
    """One message: stages, destination states and every delivery attempt."""
    detail = _client(ctx).call("GET", f"/api/messages/{message_id}", {"content": "1" if content else None})
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    m = detail["message"]
    click.echo(f"message {m['id']}  channel={m['channel']}  status={m['status']}  run={m['run']}")
    click.echo(
        f"  received {_when(m['received_at'])}  control id {m['control_id'] or '-'}  correlation {m['correlation_id']}"
    )
    if m["error"]:
        click.echo(f"  error: {m['error']}")
    click.echo(f"  source: {json.dumps(m['source'])}")
    for c in detail["contents"]:
        click.echo(f"  [{c['run']}] {c['stage']}: {c['bytes']} bytes")
        if content and "content" in c:
            for line in c["content"].replace("\r\n", "\n").replace("\r", "\n").splitlines():
                click.echo(f"      {line}")
    for d in detail["destinations"]:
        click.echo(
            f"  -> [{d['run']}] {d['destination']}: {d['status']} attempts={d['attempts']}"
            + (f" last error: {d['last_error']}" if d["last_error"] else "")
        )
    for a in detail["attempts"]:
        code = f" http={a['status_code']}" if a.get("status_code") else ""
        click.echo(
            f"     attempt {a['attempt']} [{a['run']}] {a['destination']} {_when(a['started_at'])} "
            f"{a['status']}{code} {a['error'][:80]}"
        )


@message.command("reprocess")
@click.argument("message_ids", nargs=-1)
@_filter_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def message_reprocess(
    ctx: click.Context,
    message_ids: tuple[str, ...],
    channel: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    control_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Run stored messages through the pipeline again (by id, or by filter)."""
    client = _client(ctx)
    if message_ids:
        results = [client.call("POST", f"/api/messages/{mid}/reprocess") for mid in message_ids]
    else:
        body = _filters(channel, status, since, until, control_id, limit)
        if not (channel or status or control_id):
            raise click.UsageError("give message ids, or filters (--channel/--status/--control-id)")
        results = client.call("POST", "/api/messages/_reprocess", body=body)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    failed = [r for r in results if "error" in r]
    for r in results:
        if "error" in r:
            click.echo(f"{r['id']}: not reprocessed: {r['error']}")
        else:
            click.echo(f"{r['id']}: run {r['run']} {'queued' if r['queued'] else 'stored (channel not deployed)'}")
    click.echo(f"{len(results) - len(failed)} message(s) reprocessed", err=True)
    if failed:
        sys.exit(EXIT_PROBLEMS)


# -- dashboard -----------------------------------------------------------------------------


@main.command()
@click.option("--open", "open_browser", is_flag=True, help="Open it in the default browser.")
@click.pass_context
def dashboard(ctx: click.Context, open_browser: bool) -> None:
    """Print the dashboard's address with a sign-in link (the token rides in the #fragment,
    which a browser never sends to a server)."""
    client = _client(ctx)
    client.call("GET", "/api/health")  # the engine is up and takes this token
    link = f"{client.base_url}/dashboard#token={urllib.parse.quote(client.token, safe='')}"
    click.echo(link)
    if open_browser:
        import webbrowser

        webbrowser.open(link)


# -- retention -----------------------------------------------------------------------------


@main.command()
@click.argument("channel_name", metavar="[CHANNEL]", required=False)
@click.option("--status", "show_status", is_flag=True, help="Show the schedule and the last run; prune nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def prune(ctx: click.Context, channel_name: str | None, show_status: bool, as_json: bool) -> None:
    """Remove what the channels' `retention` says is old enough, now (all channels, or one)."""
    client = _client(ctx)
    if show_status:
        state = client.call("GET", "/api/prune")
        if as_json:
            click.echo(json.dumps(state, indent=2))
            return
        every = state["interval_minutes"]
        click.echo(f"schedule: every {every:g} minutes, next {_when(state['next_at'])}" if every else "schedule: off")
        report = state["last"]
    else:
        body = {"channel": channel_name} if channel_name else {}
        report = client.call("POST", "/api/prune", body=body, timeout=3600.0)
        if as_json:
            click.echo(json.dumps(report, indent=2))
            return
    if not report:
        click.echo("no run yet")
        return
    click.echo(f"run {_when(report['started_at'])}, {report['finished_at'] - report['started_at']:.1f} s")
    rows = [
        [name, str(r["messages"]), str(r["contents"]), str(r["keys"]), r["error"] or "-"]
        for name, r in sorted(report["channels"].items())
    ]
    if rows:
        _table(rows, ["CHANNEL", "MESSAGES", "CONTENTS", "KEYS", "ERROR"])
    else:
        click.echo("no channel has retention or duplicates set")
    if any(r["error"] for r in report["channels"].values()):
        sys.exit(EXIT_PROBLEMS)


# -- reference tables ----------------------------------------------------------------------


@main.group()
def table() -> None:
    """Reference tables used by mappings (item master, locations, charge master)."""


@table.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def table_list(ctx: click.Context, as_json: bool) -> None:
    """Every table: version in use, rows, and when it was last loaded."""
    items = _client(ctx).call("GET", "/api/tables")
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    rows = [
        [
            t["name"],
            t.get("version") or "-",
            str(t.get("rows") if t.get("rows") is not None else "-"),
            _when((t.get("recorded") or {}).get("at")),
        ]
        for t in items
    ]
    _table(rows, ["TABLE", "VERSION", "ROWS", "LOADED"])


@table.command("show")
@click.argument("name")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def table_show(ctx: click.Context, name: str, limit: int, as_json: bool) -> None:
    """The rows of one table."""
    data = _client(ctx).call("GET", f"/api/tables/{name}", {"limit": limit})
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{data['name']} version {data['version']}: {data['total_rows']} row(s)")
    _table([[row.get(c, "") for c in data["columns"]] for row in data["rows"]], [c.upper() for c in data["columns"]])


@table.command("load")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def table_load(ctx: click.Context, name: str, file: str) -> None:
    """Replace table NAME with a CSV FILE and reload it in every channel, without a restart."""
    result = _client(ctx).call("PUT", f"/api/tables/{name}", raw=Path(file).read_bytes())
    where = "in use" if result["in_use"] else "stored (no deployed mapping uses it yet)"
    click.echo(f"{result['name']}: version {result['version']} {where}")


@table.command("reload")
@click.pass_context
def table_reload(ctx: click.Context) -> None:
    """Re-read every table from mappings/tables/ (after a git pull)."""
    for name, version in sorted(_client(ctx).call("POST", "/api/tables/_reload").items()):
        click.echo(f"{name}: version {version}")


# -- send ----------------------------------------------------------------------------------


@main.group()
def send() -> None:
    """Send test messages to a listener."""


@send.command("mllp")
@click.argument("address")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for each ACK.")
@click.option(
    "--split/--no-split", default=True, show_default=True, help="Send each message of a multi-message file separately."
)
def send_mllp(address: str, files: tuple[str, ...], timeout: float, split: bool) -> None:
    """Send HL7 files to HOST:PORT over MLLP; print each ACK code; exit 1 unless all are AA/CA."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="ADDRESS")
    failures = 0
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout) as sock:
        for file in files:
            data = Path(file).read_bytes()
            for payload in _split_messages(data) if split else [data]:
                sock.sendall(b"\x0b" + payload + b"\x1c\r")
                ack = _read_frame(sock)
                code, text = _msa(ack)
                click.echo(f"{file}: {code or 'no ACK'}{(' ' + text) if text else ''}")
                failures += code not in ("AA", "CA")
    sys.exit(EXIT_PROBLEMS if failures else 0)


def _split_messages(data: bytes) -> list[bytes]:
    """Split a file on MSH segments (CR, LF or CRLF separated); FHS/BHS/BTS/FTS lines are dropped."""
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    messages: list[list[bytes]] = []
    for segment in text.split(b"\r"):
        clean = segment.lstrip(b"\xef\xbb\xbf")
        if not clean.strip() or clean[:3] in (b"FHS", b"BHS", b"BTS", b"FTS"):
            continue
        if clean.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(segment)
    return [b"\r".join(m) + b"\r" for m in messages]


def _read_frame(sock: socket.socket) -> bytes:
    buffer = b""
    while b"\x1c" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    start = buffer.find(b"\x0b")
    end = buffer.find(b"\x1c")
    return buffer[start + 1 : end] if start >= 0 and end > start else b""


def _msa(ack: bytes) -> tuple[str, str]:
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            fields = segment.decode("utf-8", errors="replace").split(segment[3:4].decode() or "|")
            return (fields[1] if len(fields) > 1 else ""), (fields[3] if len(fields) > 3 else "")
    return "", ""


if __name__ == "__main__":  # pragma: no cover
    main()
