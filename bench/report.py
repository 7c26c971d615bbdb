"""Turning the raw records of a run into a Markdown summary: medians, ratios and the targets."""

from __future__ import annotations

import statistics
from typing import Any

MIB = 1024 * 1024

# The targets from bench/README.md.
FLOOR_FACTOR = 1.2
RESTORE_FACTOR = 1.1
MEMORY_LIMIT = 300 * MIB
SECOND_BACKUP_SHARE = 0.10


def mib(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1024 * MIB:
        return f"{value / 1024 / MIB:.2f} GiB"
    if abs(value) >= MIB:
        return f"{value / MIB:.1f} MiB"
    return f"{value / 1024:.0f} KiB"


def secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


class Records:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def select(self, **where: Any) -> list[dict[str, Any]]:
        out = []
        for rec in self.records:
            if not rec.get("ok"):
                continue
            if all(rec.get(k) == v or (isinstance(v, tuple) and rec.get(k) in v) for k, v in where.items()):
                out.append(rec)
        return out

    def median(self, field: str, **where: Any) -> float | None:
        values = [r[field] for r in self.select(**where) if r.get(field) is not None]
        return statistics.median(values) if values else None

    def count(self, **where: Any) -> int:
        return len(self.select(**where))

    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.records if not r.get("ok")]


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "**FAIL**")


def markdown(data: dict[str, Any]) -> str:
    rec = Records(data.get("records", []))
    meta = data.get("meta", {})
    machine = meta.get("machine", {})
    sizes = data.get("sizes", {})
    args = data.get("arguments", {})
    lines: list[str] = []
    add = lines.append
    targets: list[tuple[str, str, bool | None]] = []

    add(f"## Strongroom benchmark — {data.get('started_at')} ({data.get('status')})")
    add("")
    add(
        f"pgbench scale {args.get('scale')}, application-like database {args.get('app_mb')} MB, "
        f"{args.get('repeat')} repetition(s), medians shown; sections: {', '.join(args.get('only', []))}; "
        f"total {data.get('total_seconds')} s."
    )
    add("")
    add("| Machine | |")
    add("|---|---|")
    restic_cfg = meta.get("restic_config", {})
    for label, value in [
        ("CPUs (nproc)", machine.get("nproc")),
        ("CPU model", machine.get("cpu_model")),
        ("Memory", machine.get("memory")),
        ("Kernel", machine.get("kernel")),
        ("PostgreSQL", machine.get("postgresql")),
        (
            "restic",
            f"{machine.get('restic')}; repository format {restic_cfg.get('repository_version', '?')}, "
            f"compression {restic_cfg.get('compression', '?')}",
        ),
        (
            "pgBackRest",
            f"{machine.get('pgbackrest')}; compress-type {args.get('pgbackrest_compress')}, "
            f"process-max {args.get('pgbackrest_process_max')}",
        ),
        (
            "Strongroom",
            f"{machine.get('strongroom')} (commit {machine.get('strongroom_commit')}"
            f"{', uncommitted changes in src/' if machine.get('strongroom_dirty') else ''})",
        ),
        ("Load average at start", ", ".join(f"{x:.2f}" for x in machine.get("load_average_at_start", []))),
    ]:
        add(f"| {label} | {value} |")
    add("")

    datasets = [d for d in ("pgbench", "app") if rec.select(dataset=d)]
    logical = [d for d in datasets if rec.select(dataset=d, section="logical")]
    if logical:
        add("### Logical backup (postgres resource) vs pg_dump and restic")
        add("")
        add("| Measure | " + " | ".join(_dataset_title(d, sizes, args) for d in logical) + " |")
        add("|---|" + "---|" * len(logical))
        rows: list[tuple[str, list[str]]] = []

        def row(label: str, values: list[str]) -> None:
            rows.append((label, values))

        cols = {d: _logical_numbers(rec, d, sizes) for d in logical}
        row("Database size (pg_database_size)", [mib(cols[d]["db_size"]) for d in logical])
        row("pg_dump -Fc -Z0 size (uncompressed dump)", [mib(cols[d]["z0_size"]) for d in logical])
        row("**Floor**: `pg_dump -Fc -Z0 > /dev/null`", [secs(cols[d]["floor1"]) for d in logical])
        row("`pg_dump -Fc` to a file: time", [secs(cols[d]["dump_s"]) for d in logical])
        row("`pg_dump -Fc` file size", [mib(cols[d]["dump_bytes"]) for d in logical])
        row(
            "restic first backup (`pg_dump -Z0 \\| restic --stdin`): time",
            [secs(cols[d]["restic1_s"]) for d in logical],
        )
        row("restic first backup: repository bytes added", [mib(cols[d]["restic1_b"]) for d in logical])
        row(
            "**Strongroom first backup**: time",
            [f"{secs(cols[d]['sr1_s'])} ({times(cols[d]['sr1_x'])} floor)" for d in logical],
        )
        row(
            "Strongroom first backup: stored bytes",
            [
                f"{mib(cols[d]['sr1_stored'])} ({times(ratio(cols[d]['sr1_stored'], cols[d]['dump_bytes']))} "
                f"pg_dump -Fc)"
                for d in logical
            ],
        )
        row("Strongroom first backup: vault bytes on disk", [mib(cols[d]["sr1_disk"]) for d in logical])
        row("Strongroom first backup: peak RSS (process tree)", [mib(cols[d]["sr1_rss"]) for d in logical])
        row(
            "Strongroom CLI overhead (wall time minus the job's own duration)",
            [secs(cols[d]["sr_overhead"]) for d in logical],
        )
        row("restic first backup: peak RSS (pg_dump + restic)", [mib(cols[d]["restic1_rss"]) for d in logical])
        row("Floor after the 1% change (application-like)", [secs(cols[d]["floor2"]) for d in logical])
        row("restic second backup: time", [secs(cols[d]["restic2_s"]) for d in logical])
        row("restic second backup: bytes added", [mib(cols[d]["restic2_b"]) for d in logical])
        row(
            "**Strongroom second backup**: time",
            [f"{secs(cols[d]['sr2_s'])} ({times(cols[d]['sr2_x'])} floor)" for d in logical],
        )
        row(
            "Strongroom second backup: new bytes",
            [
                f"{mib(cols[d]['sr2_new'])} ({pct(ratio(cols[d]['sr2_new'], cols[d]['sr1_stored']))} of first)"
                for d in logical
            ],
        )
        row("`pg_restore -j2` from the local file (createdb + restore)", [secs(cols[d]["pgr_s"]) for d in logical])
        row(
            "**Strongroom restore** (into a new database)",
            [f"{secs(cols[d]['srr_s'])} ({times(cols[d]['srr_x'])} pg_restore -j2)" for d in logical],
        )
        row("Strongroom restore: peak RSS (process tree)", [mib(cols[d]["srr_rss"]) for d in logical])
        row(
            "`strongroom verify --read-data` (both recovery points)",
            [f"{secs(cols[d]['verify_s'])} ({mib(cols[d]['verify_bytes'])} vault)" for d in logical],
        )
        for label, values in rows:
            add(f"| {label} | " + " | ".join(values) + " |")
        add("")
        for d in logical:
            c = cols[d]
            targets.append(
                (
                    f"{d}: full logical backup ≤ {FLOOR_FACTOR}x floor",
                    times(c["sr1_x"]),
                    None if c["sr1_x"] is None else c["sr1_x"] <= FLOOR_FACTOR,
                )
            )
            stored_x = ratio(c["sr1_stored"], c["dump_bytes"])
            targets.append(
                (f"{d}: stored ≤ pg_dump -Fc file", times(stored_x), None if stored_x is None else stored_x <= 1.0)
            )
            targets.append(
                (
                    f"{d}: second backup ≤ {FLOOR_FACTOR}x floor",
                    times(c["sr2_x"]),
                    None if c["sr2_x"] is None else c["sr2_x"] <= FLOOR_FACTOR,
                )
            )
            targets.append(
                (
                    f"{d}: logical restore ≤ {RESTORE_FACTOR}x pg_restore -j2",
                    times(c["srr_x"]),
                    None if c["srr_x"] is None else c["srr_x"] <= RESTORE_FACTOR,
                )
            )

    dedup_rows = []
    for d, w in (("pgbench", "worst"), ("pgbench", "applike"), ("app", "applike")):
        if not rec.select(dataset=d, workload=w, op="backup2", section=("logical", "dedup")):
            continue
        where = {"dataset": d, "workload": w, "section": ("logical", "dedup")}
        restic_b = rec.median("bytes", tool="restic", op="backup2", **where)
        sr_disk = rec.median("bytes", tool="strongroom", op="backup2", **where)
        sr_new = rec.median("new_bytes", tool="strongroom", op="backup2", **where)
        sr_first = rec.median("stored_bytes", tool="strongroom", op="backup1", **where)
        sr_s = rec.median("seconds", tool="strongroom", op="backup2", **where)
        floor2 = rec.median("seconds", tool="pg_dump_floor", op="floor2", **where)
        dedup_rows.append((d, w, restic_b, sr_disk, sr_new, sr_first, sr_s, floor2))
    if dedup_rows:
        add("### Second backup after a 1% change: bytes added")
        add("")
        add(
            "| Dataset / change | restic: repository growth | Strongroom: vault growth | Strongroom / restic | "
            "Strongroom `new_bytes` | `new_bytes` as % of first backup's `stored_bytes` | "
            "Strongroom second backup time | x floor |"
        )
        add("|---|---|---|---|---|---|---|---|")
        for d, w, restic_b, sr_disk, sr_new, sr_first, sr_s, floor2 in dedup_rows:
            label = {
                "worst": "worst case: `abalance + 1 WHERE aid % 100 = 0`",
                "applike": "application-like: +1% rows, 1% contiguous updates",
            }[w]
            add(
                f"| {d}: {label} | {mib(restic_b)} | {mib(sr_disk)} | {times(ratio(sr_disk, restic_b))} | "
                f"{mib(sr_new)} | {pct(ratio(sr_new, sr_first))} | {secs(sr_s)} | {times(ratio(sr_s, floor2))} |"
            )
            share = ratio(sr_disk, restic_b)
            targets.append(
                (f"{d}/{w}: second backup adds ≤ restic", times(share), None if share is None else share <= 1.0)
            )
            if w == "applike":
                part = ratio(sr_new, sr_first)
                targets.append(
                    (
                        f"{d}/{w}: second backup adds ≤ {SECOND_BACKUP_SHARE:.0%} of first stored",
                        pct(part),
                        None if part is None else part <= SECOND_BACKUP_SHARE,
                    )
                )
        add("")
        add(
            "Repository and vault growth are measured on disk (allocated blocks) around the second backup; "
            "`new_bytes` / `stored_bytes` come from Strongroom's job result (sealed, compressed objects)."
        )
        add("")

    if rec.select(section="physical"):
        add("### Physical backup (postgres-cluster resource) vs pg_basebackup and pgBackRest")
        add("")
        add(
            f"Whole cluster ({mib(sizes.get('cluster_bytes'))} data directory). Restore = until the new cluster "
            "answers `SELECT 1`. Incremental = after the application-like 1% change on pgbench."
        )
        add("")
        add("| Tool | Full backup | Backup size | Peak RSS | Restore | Incremental | Incremental bytes |")
        add("|---|---|---|---|---|---|---|")
        phys: dict[str, dict[str, float | None]] = {}
        for tool, label in (
            ("pg_basebackup", "`pg_basebackup -Ft -X fetch -c fast`"),
            ("pgbackrest", "pgBackRest (full / incr)"),
            ("strongroom_cluster", "**Strongroom postgres-cluster**"),
        ):
            w = {"section": "physical", "tool": tool}
            size_field = "new_bytes" if tool == "strongroom_cluster" else "bytes"
            p = {
                "b1": rec.median("seconds", op="backup1", **w),
                "size": rec.median(size_field, op="backup1", **w),
                "rss": rec.median("peak_rss_tree", op="backup1", **w),
                "restore": rec.median("seconds", op="restore", **w),
                "b2": rec.median("seconds", op="backup2", **w),
                "b2_bytes": rec.median(size_field, op="backup2", **w),
            }
            phys[tool] = p
            if not rec.select(**w):
                continue
            add(
                f"| {label} | {secs(p['b1'])} | {mib(p['size'])} | {mib(p['rss'])} | {secs(p['restore'])} | "
                f"{secs(p['b2']) if tool != 'pg_basebackup' else 'n/a'} | "
                f"{mib(p['b2_bytes']) if tool != 'pg_basebackup' else 'n/a'} |"
            )
        add("")
        s, b, r = phys["strongroom_cluster"], phys["pg_basebackup"], phys["pgbackrest"]
        add(
            f"Strongroom / pg_basebackup: backup {times(ratio(s['b1'], b['b1']))}, "
            f"restore {times(ratio(s['restore'], b['restore']))}. "
            f"Strongroom / pgBackRest: backup {times(ratio(s['b1'], r['b1']))}, "
            f"restore {times(ratio(s['restore'], r['restore']))}, incremental {times(ratio(s['b2'], r['b2']))}, "
            f"incremental bytes {times(ratio(s['b2_bytes'], r['b2_bytes']))}."
        )
        add("")
        for key, label in (("b1", "physical backup"), ("restore", "physical restore"), ("b2", "physical incremental")):
            x = ratio(s[key], r[key])
            targets.append((f"{label} no slower than pgBackRest", times(x), None if x is None else x <= 1.0))

    rss = [
        r.get("peak_rss_tree")
        for r in rec.select()
        if str(r.get("tool", "")).startswith("strongroom") and r.get("peak_rss_tree")
    ]
    if rss:
        worst = max(rss)
        worst_rec = next(
            r
            for r in rec.select()
            if r.get("peak_rss_tree") == worst and str(r.get("tool", "")).startswith("strongroom")
        )
        targets.append(
            (
                f"peak memory < {mib(MEMORY_LIMIT)} (max over Strongroom runs, process tree incl. pg_dump/"
                "pg_restore children)",
                f"{mib(worst)} ({worst_rec['tool']} {worst_rec['op']} {worst_rec.get('dataset')})",
                worst < MEMORY_LIMIT,
            )
        )
        procs = [
            r.get("peak_rss_max_proc") or 0 for r in rec.select() if str(r.get("tool", "")).startswith("strongroom")
        ]
        add(f"Largest single Strongroom-tree process seen: {mib(max(procs))}.")
        add("")

    restores = [r for r in rec.records if r.get("op") == "restore" and r.get("ok")]
    if restores:
        good = sum(1 for r in restores if r.get("verified"))
        add(f"Restores verified against the source (row counts and sums): {good} of {len(restores)}.")
        add("")

    import copies  # bench/copies.py: the copy section's table (imports report itself)

    lines.extend(copies.markdown_lines(rec))

    if targets:
        add("### Targets")
        add("")
        add("| Target | Measured (median) | Result |")
        add("|---|---|---|")
        for label, value, ok in targets:
            add(f"| {label} | {value} | {_verdict(ok)} |")
        add("")

    errors = rec.errors()
    if errors or data.get("notes"):
        add("### Failures and notes")
        add("")
        seen = set()
        for r in errors:
            first = (r.get("error") or "").strip().splitlines()
            message = first[-1] if first else ""
            key = (r.get("tool"), r.get("op"), message)
            if key in seen:
                continue
            seen.add(key)
            count = sum(
                1
                for e in errors
                if (e.get("tool"), e.get("op"), ((e.get("error") or "").strip().splitlines() or [""])[-1]) == key
            )
            where = f"{r.get('dataset')}/{r.get('workload')}"
            add(f"- {r.get('tool')} {r.get('op')} ({where}, {count}x): `{message[:300]}`")
        for note in data.get("notes", []):
            add(f"- {note}")
        add("")
    return "\n".join(lines) + "\n"


def _dataset_title(d: str, sizes: dict[str, Any], args: dict[str, Any]) -> str:
    if d == "pgbench":
        return f"pgbench -s {args.get('scale')}"
    return f"application-like ({args.get('app_mb')} MB)"


def _logical_numbers(rec: Records, d: str, sizes: dict[str, Any]) -> dict[str, float | None]:
    logical = {"dataset": d, "section": "logical"}
    anywhere = {"dataset": d, "section": ("logical", "dedup")}
    c: dict[str, float | None] = {
        "db_size": sizes.get(f"{d}_database_bytes"),
        "z0_size": sizes.get(f"{d}_dump_z0_bytes"),
        "floor1": rec.median("seconds", tool="pg_dump_floor", op="floor1", **logical),
        "dump_s": rec.median("seconds", tool="pg_dump_fc", op="dump", **logical),
        "dump_bytes": rec.median("bytes", tool="pg_dump_fc", op="dump", **logical),
        "restic1_s": rec.median("seconds", tool="restic", op="backup1", **anywhere),
        "restic1_b": rec.median("bytes", tool="restic", op="backup1", **anywhere),
        "restic1_rss": rec.median("peak_rss_tree", tool="restic", op="backup1", **anywhere),
        "sr1_s": rec.median("seconds", tool="strongroom", op="backup1", **anywhere),
        "sr1_stored": rec.median("stored_bytes", tool="strongroom", op="backup1", **anywhere),
        "sr1_disk": rec.median("bytes", tool="strongroom", op="backup1", **anywhere),
        "sr1_rss": rec.median("peak_rss_tree", tool="strongroom", op="backup1", **anywhere),
        "sr_overhead": rec.median("overhead_seconds", tool="strongroom", **anywhere),
        "floor2": rec.median("seconds", tool="pg_dump_floor", op="floor2", **logical),
        "restic2_s": rec.median("seconds", tool="restic", op="backup2", **logical),
        "restic2_b": rec.median("bytes", tool="restic", op="backup2", **logical),
        "sr2_s": rec.median("seconds", tool="strongroom", op="backup2", **logical),
        "sr2_new": rec.median("new_bytes", tool="strongroom", op="backup2", **logical),
        "pgr_s": rec.median("seconds", tool="pg_restore_j2", op="restore", **logical),
        "srr_s": rec.median("seconds", tool="strongroom", op="restore", **logical),
        "srr_rss": rec.median("peak_rss_tree", tool="strongroom", op="restore", **logical),
        "verify_s": rec.median("seconds", tool="strongroom", op="verify", **logical),
        "verify_bytes": rec.median("bytes", tool="strongroom", op="verify", **logical),
    }
    floor1 = rec.median("seconds", tool="pg_dump_floor", op="floor1", **logical)
    c["sr1_x"] = ratio(c["sr1_s"], floor1)
    c["sr2_x"] = ratio(c["sr2_s"], c["floor2"])
    c["srr_x"] = ratio(c["srr_s"], c["pgr_s"])
    return c
