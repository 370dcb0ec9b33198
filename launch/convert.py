"""Convert a Hugging Face checkpoint to an orbax checkpoint (config.json + params/, tokenizer files),
optionally laid out on a mesh. Every entry point loads either format.

    python launch/convert.py --input=/models/bloom-7b1 --output=/models/bloom-7b1-orbax --dtype=bfloat16
    python launch/convert.py --input=bigscience/bloom-560m --output=~/ckpt/bloom-560m-orbax
    python launch/convert.py --input=/models/llama-2-70b --output=/ckpt/llama-2-70b --mesh=1,-1 --fsdp
"""

from absl import app, flags

import lingua_jax as lj
from lingua_jax import data, sharding

_INPUT = flags.DEFINE_string("input", None, "Hugging Face checkpoint directory, or hub id org/name[@revision].",
                             required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Orbax checkpoint directory to write.", required=True)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter dtype.")
_MESH = flags.DEFINE_list("mesh", None, "data,model mesh shape (-1: the remaining devices); default: none.")
_FSDP = flags.DEFINE_bool("fsdp", False, "Also split parameters over the data axis.")


def main(argv):
    del argv
    mesh = sharding.make_mesh(tuple(int(x) for x in _MESH.value)) if _MESH.value else None
    lm = lj.load_pretrained(_INPUT.value, dtype=_DTYPE.value, mesh=mesh, fsdp=_FSDP.value)
    try:
        tokenizer = data.load_tokenizer(lm.source["path"])
    except FileNotFoundError:
        tokenizer = None
    out = lj.save_pretrained(lm, _OUTPUT.value, tokenizer, format="orbax")
    print(f"orbax checkpoint: {out.resolve()}" + ("" if tokenizer else " (no tokenizer files in the input)"))


if __name__ == "__main__":
    app.run(main)
