"""``python -m pvtt data``: ask the dataset index what the dataset holds and where each triplet came from.

- ``data stats``: triplets per split and category, every stage's survivors and rejects by reason, backends.
- ``data lineage <id>``: one triplet (pair id or WebDataset key) back to its raw video, as a tree.
- ``data ids``: the triplet ids (``--split`` to filter).

Each reads ``<paths.artifacts>/dataset/index.sqlite`` (``artifacts/dataset/index.sqlite``; written
by the pack stage, ``pvtt.pack.dataset_index``) unless ``--index`` names another; ``--json`` prints JSON
instead of text. Exit status 2 for an unknown id or a missing index.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pvtt.pack.dataset_index import UnknownTriplet, lineage, open_index, stats, triplet_ids

DEFAULT_INDEX = Path("artifacts") / "dataset" / "index.sqlite"


def default_index() -> Path:
    """<paths.artifacts>/dataset/index.sqlite from ./params.yaml when it sets one, else DEFAULT_INDEX."""
    try:
        import yaml

        art = (yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8")) or {}).get("paths", {}).get("artifacts")
    except (OSError, ValueError, AttributeError, ImportError):
        art = None
    return Path(art) / "dataset" / "index.sqlite" if art else DEFAULT_INDEX


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"


def format_stats(s: dict, index: str = "") -> str:
    lines = [f"Dataset index {index}".rstrip(),
             f"Triplets: {s['triplets']} ({_counts(s['splits'])}) in {s['shards']} shards", "", "Categories"]
    names = {"videos": "source videos (ingested)", "products": "products (usable)",
             "triplets_from": "triplets, category replaced", "triplets_to": "triplets, new product category"}
    for k, label in names.items():
        lines.append(f"  {label:<32} {_counts(s['categories'].get(k, {}))}")
    lines += ["", f"  {'stage':<12} {'unit':<14} {'survivors':>9} {'rejected':>8}  rejected by reason"]
    backends = []
    for st in s["stages"]:
        lines.append(f"  {st['stage']:<12} {st['unit']:<14} {st['ok']:>9} {st['rejected']:>8}  "
                     f"{_counts(st['rejects_by_reason']) if st['rejects_by_reason'] else ''}".rstrip())
        extra = []
        if st.get("skipped"):
            extra.append(f"skipped {st['skipped']}")
        t = st.get("totals") or {}
        if st["stage"] == "pairs" and t:
            filtered = {k.split(":", 1)[1]: n for k, n in t.items() if k.startswith("filtered:") and n}
            extra.append(f"of {t.get('candidates', '?')} candidates: filtered out {_counts(filtered) if filtered else 'none'}, "
                         f"not selected {t.get('not_selected', '?')}, kept {t.get('kept', '?')} "
                         f"(own product's views, not candidates: {t.get('own_product_excluded', '?')})")
        elif st["stage"] == "review" and t:
            extra.append(f"L3 sample {t.get('sampled', 0)}: accepted {t.get('accepted', 0)}, rejected "
                         f"{t.get('rejected', 0)}, pending {t.get('pending', 0)}; "
                         f"not sampled {(st.get('ok_by') or {}).get('not_sampled', 0)}")
        elif t:
            extra.append(_counts(t))
        if st.get("ok_by") and st["stage"] == "pack":
            extra.append(f"by split: {_counts(st['ok_by'])}")
        for e in extra:
            lines.append(f"  {'':<12} {'':<14} {'':>9} {'':>8}  {e}")
        if st.get("backends"):
            backends.append(f"{st['stage']} {_counts(st['backends'])}")
    lines += ["", "Backends: " + ("; ".join(backends) or "-")]
    return "\n".join(lines)


def _fmt(v) -> str:
    return "?" if v is None else str(v)


def _hash(v) -> str:
    return v if v else "- (hashed when packed)"


def format_lineage(d: dict) -> str:
    st = {s["stage"]: s for s in d["stages"]}

    def tag(stage: str, extra: str = "") -> str:
        s = st.get(stage) or {}
        status = s.get("status") or "not reached"
        if s.get("reason"):
            status += f": {s['reason']}"
        return f"[{stage}: {status}{', ' + extra if extra else ''}]"

    v, sh, c, m, b, p, sy = d["video"], d["shot"], d["clip"], d["mask"], d["background"], d["product"], d["synth"]
    vw = p.get("view") or {}
    head = [f"triplet {d['id']}"]
    if d["packed"]:
        head.append(f"  packed: split {d['split']}, {d['tar']} (key {d['key']})")
    else:
        last = next((s for s in reversed(d["stages"]) if s.get("status") == "rejected"), None)
        head.append("  NOT PACKED" + (f": rejected by {last['stage']}: {last['reason']}" if last else ""))
    head.append(f"  caption: {d['caption']}")
    head.append(f"  categories: {d['categories']['from']} -> {d['categories']['to']}")
    nodes = [
        (f"raw video {v['id']} {tag('ingest')}",
         [f"source    {_fmt(v['source'])}  sha256 {_fmt(v['source_sha256'])}",
          f"ingested  {_fmt(v['path'])}  sha256 {_fmt(v['sha256'])}",
          f"{_fmt(v['category'])}, {_fmt(v['width'])}x{_fmt(v['height'])}, {_fmt(v['fps'])} fps, "
          f"{_fmt(v['n_frames'])} frames, {_fmt(v['codec'])}; own product {_fmt(v['product_id'])}"]),
        (f"shot {_fmt(sh.get('index'))} {tag('shots', 'detector ' + _fmt(sh.get('detector')))}",
         [f"frames {_fmt(sh.get('start_frame'))}-{_fmt(sh.get('end_frame'))} "
          f"({_fmt(sh.get('start_time'))}-{_fmt(sh.get('end_time'))} s)"]),
        (f"clip {c['id']} {tag('clips')}",
         [f"{_fmt(c.get('path'))}  sha256 {_hash(c.get('sha256'))}",
          f"{_fmt(c.get('n_frames'))} frames {_fmt(c.get('width'))}x{_fmt(c.get('height'))} @ {_fmt(c.get('fps'))} fps; "
          f"source frames from {_fmt(c.get('src_start_frame'))} (+{_fmt(c.get('src_n_frames'))}), crop {_fmt(c.get('crop'))}"]),
        (f"mask {tag('masks', 'backend ' + _fmt(m['backend']))}",
         [_fmt(m["path"])] + ([f"maskqc {tag('maskqc')}: " + ", ".join(
             f"{k} {val}" for k, val in sorted(m["maskqc"].items()) if k not in ("kept", "reasons"))]
             if m.get("maskqc") else [f"maskqc {tag('maskqc')}"])),
        (f"background {tag('backgrounds', 'backend ' + _fmt(b['backend']))}", [_fmt(b["path"])]),
        (f"product {p['id']} \"{_fmt(p.get('name'))}\" ({_fmt(p.get('category'))}) "
         f"{tag('products', 'backend ' + _fmt(p.get('backend')))}",
         [f"view {_fmt(vw.get('view'))}  {_fmt(vw.get('path'))}  sha256 {_hash(vw.get('sha256'))}",
          f"source image {_fmt(vw.get('source'))}, {_fmt(vw.get('width'))}x{_fmt(vw.get('height'))}"]),
        (f"pair {tag('pairs')}", [f"{d['pair']['shard']}; replaces product {_fmt(d['pair']['source_product'])}"]),
        (f"synth {tag('synth', 'route ' + _fmt(sy['route']))}",
         [f"{_fmt(sy['edited_path'])}  sha256 {_hash(sy['edited_sha256'])}", f"new product mask {_fmt(sy['mask_path'])}"]),
    ]
    f = d.get("filter") or {}
    flines = []
    for level in ("l1", "l2"):
        sc = f.get(level) or {}
        if sc:
            flines.append(f"{level.upper()} {'pass' if sc.get('pass') else 'FAIL'}: " + ", ".join(
                f"{k} {val}" for k, val in sorted(sc.items()) if k != "pass"))
    nodes += [(f"filter {tag('filter')}", flines or ["not scored"]),
              (f"review {tag('review')}", [f"L3: {d['review'] or '-'}"]),
              (f"pack {tag('pack')}", [f"{d['split']}: {d['tar']}" if d["packed"] else "not packed"]),
              ("params each stage read", [f"{k}: {json.dumps(val, sort_keys=True)}" for k, val in d["params"].items()]
               or ["(not recorded)"])]
    out = head
    for i, (title, lines) in enumerate(nodes):
        last = i == len(nodes) - 1
        out.append(("└── " if last else "├── ") + title)
        out += [("      " if last else "│     ") + ln for ln in lines]
    return "\n".join(out)


def _open(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"dataset index not found: {path} (build the dataset: `dvc repro dataset` or "
                                f"`snakemake --cores all artifacts/dataset`; or pass --index PATH)")
    return open_index(path)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `... | head`
        sys.stderr.close()
        return 0


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pvtt data", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index", type=Path, default=None,
                        help=f"the dataset index (default: <paths.artifacts of ./params.yaml>/dataset/index.sqlite, "
                             f"i.e. {DEFAULT_INDEX})")
    common.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("stats", parents=[common], help="counts per category, survivors / rejects per stage")
    lp = sub.add_parser("lineage", parents=[common], help="one triplet back to its raw video")
    lp.add_argument("id", help="triplet id (pair id) or WebDataset key")
    ip = sub.add_parser("ids", parents=[common], help="list the triplet ids")
    ip.add_argument("--split", choices=["train", "val", "benchmark"])
    a = ap.parse_args(argv)
    a.index = a.index or default_index()
    try:
        conn = _open(a.index)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if a.cmd == "stats":
            s = stats(conn)
            print(json.dumps(s, indent=2, sort_keys=True) if a.json else format_stats(s, str(a.index)))
        elif a.cmd == "lineage":
            try:
                d = lineage(conn, a.id)
            except UnknownTriplet as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(json.dumps(d, indent=2, sort_keys=True) if a.json else format_lineage(d))
        else:
            rows = triplet_ids(conn, a.split)
            print(json.dumps(rows, indent=2) if a.json else "\n".join(f"{r['id']}\t{r['split']}" for r in rows))
    finally:
        conn.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

