"""Stage format: translated documents → Alpaca QA pairs in data/processed/{train,validation,test}.jsonl.

    python stages/format.py

Splits are made by document (no document in two splits), seeded by ``seed``, unless the source
brought its own (CMNEE's release folder, a user's train/validation/test files or ``split`` fields).
Translated answers are first projected onto their sentence (``data.answer_projection``, see
``ftbench.projection``). The counts go to metrics/data.json so that ``dvc metrics diff`` shows data
changes beside model changes; a sample of projections goes to data/interim/projection_sample.json.
"""

from collections import Counter
from pathlib import Path

from ftbench.alpaca import cap, qa_pairs, split_documents
from ftbench.io import read_json, read_jsonl, write_json, write_jsonl
from ftbench.params import load_params
from ftbench.projection import answer_report, project_document, sample
from ftbench.stage import main, parser

SRC = Path("data/interim/translated.jsonl")
STATS = Path("data/interim/translate_stats.json")
OUT = Path("data/processed")
REPORT = Path("metrics/data.json")
SAMPLE = Path("data/interim/projection_sample.json")
SAMPLE_SIZE = 20  # per status: enough to judge the threshold by eye, small enough to read


def run() -> None:
    args = parser(__doc__).parse_args()
    params = load_params(args.params)
    counts: Counter = Counter()
    docs = read_jsonl(SRC)
    audit: list[dict] = []  # how each answer was found (CMNEE only: a user's pairs are taken as given)
    mode, threshold = params.data.answer_projection, params.data.projection_threshold
    pairs = [p for d in docs for p in (d["pairs"] if "pairs" in d
                                       else qa_pairs(project_document(d, mode, threshold), counts, audit))]
    if all("split" in d for d in docs):  # CMNEE's release splits, or the user's own
        split_of = {d["id"]: d["split"] for d in docs}
    else:
        split_of = split_documents([d["id"] for d in docs], params.data.split, params.seed)
    splits = {name: [p for p in pairs if split_of[p["doc_id"]] == name] for name in ("train", "validation", "test")}
    available = {name: len(rows) for name, rows in splits.items()}
    splits["train"] = cap(splits["train"], params.data.max_train, params.seed)
    for name in ("validation", "test"):
        splits[name] = cap(splits[name], params.data.max_eval, params.seed)
    report = {"documents": len(docs), "events": sum(len(d.get("events", ())) for d in docs), "qa_pairs": len(pairs),
              "answers_in_context": sum(p["answer_in_context"] for p in pairs), "splits": {}}
    for name, rows in splits.items():
        write_jsonl(OUT / f"{name}.jsonl", rows)
        report["splits"][name] = {
            "documents": sum(1 for s in split_of.values() if s == name),
            "events": sum(len(d.get("events", ())) for d in docs if split_of[d["id"]] == name),
            "qa_pairs_available": available[name], "qa_pairs": len(rows),
            # an answer missing from its context was translated apart from its document
            "answers_not_in_context": sum(not r["answer_in_context"] for r in rows),
            "by_event_type": dict(sorted(Counter(r["event_type"] for r in rows).items())),
            "by_role": dict(sorted(Counter(r["role"] for r in rows).items())),
        }
        if audit:  # of the pairs available, before max_train / max_eval
            report["splits"][name]["answers"] = answer_report([e for e in audit if split_of[e["doc_id"]] == name])
    stats = read_json(STATS)
    counts.update(stats["dropped"])  # records the translate stage dropped, by reason
    report["dropped"] = dict(sorted(counts.items()))
    if "split_overlap" in stats:  # a user's own splits: contexts allowed in two splits (data.allow_split_overlap)
        report["split_overlap"] = stats["split_overlap"]
    write_json(SAMPLE, {"answer_projection": mode, "projection_threshold": threshold,
                        **sample(audit, SAMPLE_SIZE, params.seed)})
    write_json(REPORT, report)
    print(" ".join(f"{k}={v['qa_pairs']}" for k, v in report["splits"].items()), f"(of {len(pairs)} pairs)")


if __name__ == "__main__":
    main(run)
