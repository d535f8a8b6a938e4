"""Renders a bench result document: a Markdown table (printed and pasted into docs/benchmarks.md)
and a hand-written SVG bar chart (median bars with min-max whiskers), no plotting library."""

from html import escape

US = "microscaler"


def _s(x):
    return "—" if x is None else f"{x:.2f} s" if x >= 0.995 else f"{x * 1000:.0f} ms"


def machine_line(doc):
    m = doc["machine"]
    return (f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, kernel {m['kernel']}, "
            f"Docker {m['docker']}" + (f", docker-compose {m['compose']}" if m.get("compose") else ""))


def table(doc):
    """Markdown: one table of every scenario and contender, with the ratio to microscaler."""
    p = doc["params"]
    lines = [
        f"Run `{doc['run']}` on {doc['date']} ({'quick' if doc['quick'] else 'full'}, {doc['duration_seconds']} s): "
        + machine_line(doc) + ".",
        "",
        f"Workload `{p['workload']}`; N = {p['n']}, scale-in to {p['scale_in_to']}, stop grace {p['grace_seconds']} s "
        f"for every contender; {p['rounds']} round(s), contenders alternated. Ratio = contender's median / "
        "microscaler's (above 1: microscaler is faster).",
        "",
        "| scenario | contender | median | min – max | rounds | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for sc, by in doc["scenarios"].items():
        ours = by.get(US, {}).get("median")
        for c, r in by.items():
            if r.get("never"):
                lines.append(f"| {sc} | {c} | never | — | {r['rounds']} | ∞ |")
                continue
            ratio = "—" if not ours or r["median"] is None else f"{r['median'] / ours:.2f}×"
            failed = f" ({r['failed']} timed out)" if r.get("failed") else ""
            lines.append(f"| {sc} | {c} | {_s(r['median'])} | {_s(r['min'])} – {_s(r['max'])} | "
                         f"{r['rounds']}{failed} | {ratio} |")
    f = doc.get("footprint")
    if f:
        lines += [
            "",
            f"Controller footprint with {f['containers']} containers (CPU in % of one core): "
            f"idle over {f['idle_window_seconds']} s **{f['controller_cpu_percent_idle']} %** "
            f"(dockerd {f['dockerd_cpu_percent_idle']} %); during the scale-out 0→{f['containers']} "
            f"({_s(f['scale_out_seconds'])}) {f['controller_cpu_percent_scale_out']} % "
            f"(dockerd {f['dockerd_cpu_percent_scale_out']} %); resident memory "
            f"**{f['controller_rss_mib']} MiB** (peak {f['controller_peak_rss_mib']} MiB).",
        ]
    return "\n".join(lines)


def svg(doc):
    """One panel per scenario: a bar per contender (median) with a min-max whisker."""
    width, label_w, bar_w, row_h, pad = 1060, 250, 560, 22, 10
    y = 54
    parts = []
    title = f"microscaler benchmark {doc['run']} ({doc['date']}{', quick' if doc['quick'] else ''})"
    parts.append(f'<text x="{pad}" y="20" font-size="13" font-weight="bold">{escape(title)}</text>')
    parts.append(f'<text x="{pad}" y="34" font-size="11">{escape(machine_line(doc))}</text>')
    parts.append(f'<text x="{pad}" y="48" font-size="11" fill="#555">median (bar) and min–max (whisker), '
                 f'seconds, from engine event timestamps; each panel has its own scale</text>')
    for sc, by in doc["scenarios"].items():
        y += 18
        parts.append(f'<text x="{pad}" y="{y}" font-size="12" font-weight="bold">{escape(sc)}</text>')
        y += 6
        top = max([r["max"] for r in by.values() if r.get("max") is not None] or [1.0]) * 1.08
        scale = bar_w / top
        x0 = label_w
        for c, r in by.items():
            cy = y + row_h / 2
            colour = "#1f77b4" if c == US else "#9a9a9a"
            parts.append(f'<text x="{label_w - 8}" y="{cy + 4}" font-size="11" text-anchor="end">{escape(c)}</text>')
            if r.get("never"):
                parts.append(f'<text x="{x0 + 4}" y="{cy + 4}" font-size="11" fill="#b22">never (the engine does not '
                             f'bring back a removed container)</text>')
            elif r["median"] is None:
                parts.append(f'<text x="{x0 + 4}" y="{cy + 4}" font-size="11" fill="#b22">timed out</text>')
            else:
                w = max(r["median"] * scale, 1)
                parts.append(f'<rect x="{x0}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{colour}"/>')
                lo, hi = x0 + r["min"] * scale, x0 + r["max"] * scale
                parts.append(f'<line x1="{lo:.1f}" y1="{cy}" x2="{hi:.1f}" y2="{cy}" stroke="#222" stroke-width="1.2"/>')
                for xx in (lo, hi):
                    parts.append(f'<line x1="{xx:.1f}" y1="{cy - 5}" x2="{xx:.1f}" y2="{cy + 5}" stroke="#222" stroke-width="1.2"/>')
                txt = f"{_s(r['median'])}  ({_s(r['min'])} – {_s(r['max'])}, n={r['rounds']})"
                parts.append(f'<text x="{max(hi, x0 + w) + 6:.1f}" y="{cy + 4}" font-size="10" fill="#333">{escape(txt)}</text>')
            y += row_h
        parts.append(f'<line x1="{x0}" y1="{y - len(by) * row_h}" x2="{x0}" y2="{y}" stroke="#444"/>')
        y += 4
    f = doc.get("footprint")
    if f:
        y += 22
        parts.append(
            f'<text x="{pad}" y="{y}" font-size="12">{escape("controller footprint, " + str(f["containers"]) + " containers: idle CPU " + str(f["controller_cpu_percent_idle"]) + " % of a core (dockerd " + str(f["dockerd_cpu_percent_idle"]) + " %), during scale-out " + str(f["controller_cpu_percent_scale_out"]) + " % (dockerd " + str(f["dockerd_cpu_percent_scale_out"]) + " %), RSS " + str(f["controller_rss_mib"]) + " MiB")}</text>')
    y += 16
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" viewBox="0 0 {width} {y}" '
            f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n')
    return head + "\n".join(parts) + "\n</svg>\n"
