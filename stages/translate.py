"""Stage translate: CMNEE documents (zh) → data/interim/translated.jsonl (en view of each document).

    python stages/translate.py
"""

from collections import Counter
from pathlib import Path

from ftbench.cmnee import load_documents
from ftbench.io import write_json, write_jsonl
from ftbench.params import load_params
from ftbench.stage import main, parser
from ftbench.translate import document_segments, make_backends, translate_document, translate_segments

OUT = Path("data/interim/translated.jsonl")
STATS = Path("data/interim/translate_stats.json")


def run() -> None:
    args = parser(__doc__).parse_args()
    params = load_params(args.params)
    counts: Counter = Counter()
    docs = load_documents(params.data.raw, params.data.encoding, counts)
    backends = make_backends(params.translate.backends, memory=params.translate.memory,
                             marian_model=params.translate.marian_model, batch_size=params.translate.batch_size)
    table = translate_segments([s for d in docs for s in document_segments(d)], backends)
    rows = [translate_document(d, table) for d in docs]
    by_backend = Counter(backend for _, backend in table.values())
    write_jsonl(OUT, rows)
    write_json(STATS, {"documents": len(rows), "segments": len(table), "by_backend": dict(by_backend),
                       "dropped": dict(counts)})
    print(f"translated {len(rows)} documents, {len(table)} unique segments {dict(by_backend)}")


if __name__ == "__main__":
    main(run)
