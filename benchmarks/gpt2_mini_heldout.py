"""gpt2_mini's held-out loss, pretrained against the same architecture with random weights.

On documents nothing trained on (`lk.corpus_split("recipe")`): those of its five pretraining
families (`keep_heldout`) and those of the recipe family it never read (`target_heldout`); and,
to show the gap between seen and unseen, as many of the documents it was pretrained on.

    python benchmarks/gpt2_mini_heldout.py     # writes benchmarks/results/gpt2-mini/heldout.json
"""

import argparse
import json
import os
import platform
import sys
import time

from lora_keras.host import describe_host

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "gpt2-mini", "heldout.json")


def _never_a_pretraining_target(preprocessor, pretrain, documents, sequence_length):
    """The fraction of the documents' target tokens that no pretraining document has as a target:
    the pretrained model learnt to give them almost no probability."""
    import keras

    def targets(texts):
        _, y, weights = preprocessor(texts, sequence_length=sequence_length)
        y, weights = keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(weights)
        return y[weights > 0]

    seen = set()
    for start in range(0, len(pretrain), 256):
        seen.update(targets(pretrain[start : start + 256]).tolist())
    wanted = targets(documents)
    return sum(token not in seen for token in wanted.tolist()) / len(wanted)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--seed", type=int, default=0, help="seeds the random weights")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sequence-length", type=int, default=128)
    args = parser.parse_args(argv)

    import keras
    import keras_hub

    from lora_keras.data.corpus_split import corpus_split
    from lora_keras.models import load_gpt2
    from lora_keras.models.architectures import GPT2_MINI_HELDOUT_FAMILY
    from lora_keras.models.shipped_preset import shipped_record
    from lora_keras.quality import evaluate_heldout

    split = corpus_split(GPT2_MINI_HELDOUT_FAMILY)
    sets = {
        "keep_heldout": split.keep_heldout,
        "target_heldout": split.target_heldout,
        "pretrain_seen": split.pretrain[:: len(split.pretrain) // len(split.keep_heldout)],
    }
    models = {"pretrained": load_gpt2("gpt2_mini", weights="pretrained")}
    keras.utils.set_random_seed(args.seed)
    models["random"] = load_gpt2("gpt2_mini", weights="random")
    figures, start = {}, time.perf_counter()
    for name, documents in sets.items():
        figures[name] = {"documents": len(documents)}
        for weights, lm in models.items():
            figures[name][weights] = evaluate_heldout(
                lm, documents, batch_size=args.batch_size, sequence_length=args.sequence_length
            )
            print(name, weights, figures[name][weights], flush=True)
        figures[name]["loss_ratio"] = (
            figures[name]["pretrained"]["loss"] / figures[name]["random"]["loss"]
        )
    figures["target_heldout"]["tokens_never_a_pretraining_target"] = _never_a_pretraining_target(
        models["pretrained"].preprocessor,
        split.pretrain,
        split.target_heldout,
        args.sequence_length,
    )
    record = shipped_record("gpt2_mini")
    result = {
        "preset": "gpt2_mini",
        "what": "token-weighted mean next-token cross-entropy (nats) over non-padding targets",
        "heldout_family": GPT2_MINI_HELDOUT_FAMILY,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "sequence_length": args.sequence_length,
        "evaluation_seconds": round(time.perf_counter() - start, 1),
        "pretraining": {key: record[key] for key in ("seed", "steps", "batch_size", "seconds")},
        "environment": {
            **describe_host(),
            "cpu_count": os.cpu_count(),
            "backend": keras.backend.backend(),
            "keras": keras.__version__,
            "keras_hub": keras_hub.__version__,
            "python": platform.python_version(),
        },
        "command": " ".join(["python benchmarks/gpt2_mini_heldout.py", *(argv or sys.argv[1:])]),
        **figures,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as file:
        json.dump(result, file, indent=1)
        file.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
