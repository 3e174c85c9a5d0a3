"""Model bundles: write, sign, pack and load-with-validation (the one check the agent and evaluation share).

A bundle is a flat folder (docs/model-bundle.md):

- `model.onnx`  one GRU time step: (features [B, F], h [layers, B, hidden]) -> (score [B, K], h_out)
- `card.json`   schema 1: versions, feature spec, state shape, outputs, thresholds, file digests,
                what the model was trained on (optional `trained_on`, edge_agent.trained_on), ...
- `test_vectors.json`  input sequences with the outputs they must produce, replayed at load
- `signature.json`     optional: Ed25519 over the sha256 of every other file (edge_agent.signing)

`load_bundle` refuses anything it cannot vouch for with `BundleError(reason, detail)`; reasons are
stable codes listed in `BUNDLE_REASONS`. `pack_bundle` / `unpack_bundle` turn a bundle into one
deterministic tar for transport and back, refusing path tricks.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.alarms import Thresholds
from edge_agent.errors import BundleError, FeatureError
from edge_agent.features import FeatureSpec
from edge_agent.signing import (
    generate_keypair,
    is_sha256_hex,
    load_private_key,
    load_public_keys,
    sha256_file,
    sign_digests,
    verify_signature,
)
from edge_agent.trained_on import TrainedOn

__all__ = [
    "BUNDLE_REASONS",
    "Bundle",
    "check_shapes",
    "generate_keypair",
    "load_bundle",
    "make_session",
    "pack_bundle",
    "replay_test_vectors",
    "sign_bundle",
    "unpack_bundle",
    "validate_card",
    "write_bundle",
]

SCHEMA = 1
CARD = "card.json"
MODEL = "model.onnx"
TEST_VECTORS = "test_vectors.json"
SIGNATURE = "signature.json"
REQUIRED_FILES = (MODEL, TEST_VECTORS)
MODES = ("supervised", "forecast")
MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # all files together; an H=64 GRU step is ~60 KB
MAX_FILES = 32
MAX_ATOL = 1e-2  # test vectors looser than this prove nothing

BUNDLE_REASONS: frozenset[str] = frozenset(
    {
        "missing_file",  # the folder, card.json, a file named by the card or the signature is absent
        "bad_card",  # card.json is not JSON or does not follow schema 1
        "unsigned",  # no signature.json and unsigned bundles are not allowed
        "untrusted_key",  # signed by a key that is not among the trusted keys
        "bad_signature",  # signature.json malformed, or the signature does not verify
        "digest_mismatch",  # a file's sha256 differs from card.json / signature.json, or is not covered
        "bad_key",  # a trusted-key or signing-key file cannot be read as an Ed25519 key
        "feature_spec",  # the card's feature spec is not one this build can compute
        "bad_model",  # model.onnx does not load in onnxruntime
        "shape",  # model inputs/outputs do not match the card (names, F, state shape, K, dynamic B)
        "test_vectors",  # test_vectors.json malformed, or replaying it gives other outputs
        "bad_archive",  # a packed bundle with path traversal, links, too many or too large files
        "rollback",  # older (card `created`) than the bundle served; deploy with --force to go back
        "wrong_agent",  # the signed card's `agents` list does not name this agent
    }
)

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass(frozen=True)
class Bundle:
    """A validated bundle. `session` is a ready onnxruntime session (single-threaded, sequential)."""

    path: Path
    card: dict[str, Any]
    spec: FeatureSpec
    session: Any  # onnxruntime.InferenceSession
    state_shape: tuple[int, int]
    outputs: tuple[str, ...]
    thresholds: Thresholds
    key_id: str | None  # who signed it (None when unsigned)
    verified: bool  # True when the signature was verified against a trusted key
    trained_on: TrainedOn | None = None  # the card's `trained_on` (None: a card made before it existed)

    @property
    def model_version(self) -> str:
        return str(self.card["model_version"])

    @property
    def n_features(self) -> int:
        return int(self.spec.n_features)


# ----------------------------------------------------------------------------------------------- card


def _fail(detail: str) -> BundleError:
    return BundleError("bad_card", detail)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_card(card: Any, *, need_files: bool = True) -> dict[str, Any]:
    """Check a card against schema 1; returns it. BundleError("bad_card") says which field is wrong."""
    if not isinstance(card, dict):
        raise _fail("card.json must be a JSON object")
    schema = card.get("schema")
    if schema != SCHEMA:
        hint = (
            " (this gruwatch is too old for it; upgrade)"
            if isinstance(schema, int) and schema > SCHEMA
            else ""
        )
        raise _fail(f"schema is {schema!r}, this agent reads schema {SCHEMA}{hint}")
    mv = card.get("model_version")
    if not isinstance(mv, str) or not mv.strip():
        raise _fail("model_version must be a non-empty string")
    created = card.get("created")
    try:
        if not isinstance(created, str):
            raise ValueError(created)
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _fail(f"created must be an ISO-8601 time string, got {created!r}") from exc
    parent = card.get("parent_version", "missing")
    if parent is not None and not isinstance(parent, str):
        raise _fail("parent_version must be a string or null")
    agents = card.get("agents")
    if agents is not None and not (
        isinstance(agents, list) and all(isinstance(a, str) and a for a in agents)
    ):
        raise _fail("agents must be a list of agent ids (or absent: any agent)")
    if card.get("mode") not in MODES:
        raise _fail(f"mode must be one of {MODES}, got {card.get('mode')!r}")
    if not isinstance(card.get("feature_spec"), dict):
        raise _fail("feature_spec must be an object (FeatureSpec.to_dict())")
    ss = card.get("state_shape")
    if not (isinstance(ss, list) and len(ss) == 2 and all(_is_int(x) and x >= 1 for x in ss)):
        raise _fail(f"state_shape must be [layers, hidden] of positive integers, got {ss!r}")
    outs = card.get("outputs")
    if not (isinstance(outs, list) and outs and all(isinstance(o, str) and o for o in outs)):
        raise _fail("outputs must be a non-empty list of names")
    if outs[0] != "health" or len(set(outs)) != len(outs):
        raise _fail(f"outputs must start with 'health' and be distinct, got {outs!r}")
    try:
        Thresholds.from_dict(card.get("thresholds"))  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise _fail(f"thresholds: {exc}") from exc
    if not isinstance(card.get("validation"), dict):
        raise _fail("validation must be an object (metrics)")
    td = card.get("training_data")
    if not isinstance(td, dict):
        raise _fail("training_data must be an object")
    if not is_sha256_hex(td.get("fingerprint")):
        raise _fail("training_data.fingerprint must be a sha256 hex digest")
    if not (_is_int(td.get("runs")) and td["runs"] >= 0):
        raise _fail("training_data.runs must be a non-negative integer")
    srcs = td.get("sources")
    if not (isinstance(srcs, list) and all(isinstance(s, str) for s in srcs)):
        raise _fail("training_data.sources must be a list of strings")
    try:
        TrainedOn.from_card(card)  # optional; when present the agent refuses windows outside it
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if need_files:
        files = card.get("files")
        if not isinstance(files, dict):
            raise _fail("files must map file names to sha256 digests")
        for name, digest in files.items():
            if not _NAME.fullmatch(name) or name in (CARD, SIGNATURE) or name.startswith("."):
                raise _fail(f"files: {name!r} is not a valid bundle file name")
            if not is_sha256_hex(digest):
                raise _fail(f"files: the digest of {name} is not 64 lower-case hex digits")
        for name in REQUIRED_FILES:
            if name not in files:
                raise _fail(f"files must list {name}")
    return card


# ------------------------------------------------------------------------------------- write and sign


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def write_bundle(
    out_dir: Path | str, *, onnx_bytes: bytes, card: Mapping[str, Any], test_vectors: Mapping[str, Any]
) -> Path:
    """Write model.onnx, test_vectors.json and card.json (with "files" filled in) to `out_dir`.

    The card is checked against schema 1 first (BundleError("bad_card")). A stale signature.json is
    removed, since it cannot match the new files: sign afterwards with `sign_bundle`. Other files
    in the folder are left alone but make the bundle fail to load, so write into a fresh folder.
    """
    full = dict(card)
    full.setdefault("schema", SCHEMA)
    validate_card(full, need_files=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SIGNATURE).unlink(missing_ok=True)
    _write_atomic(out / MODEL, onnx_bytes)
    _write_atomic(out / TEST_VECTORS, _json_bytes(dict(test_vectors)))
    full["files"] = {name: sha256_file(out / name) for name in REQUIRED_FILES}
    _write_atomic(out / CARD, _json_bytes(full))
    return out


def _bundle_files(path: Path) -> dict[str, Path]:
    """Every entry of the bundle folder except signature.json; only plain files are allowed."""
    files: dict[str, Path] = {}
    for entry in sorted(path.iterdir()):
        if entry.name == SIGNATURE:
            continue
        if entry.is_symlink() or not entry.is_file():
            raise BundleError(
                "digest_mismatch", f"{entry.name} is not a plain file; bundles are flat folders"
            )
        files[entry.name] = entry
    return files


def sign_bundle(bundle_dir: Path | str, private_key_path: Path | str) -> str:
    """Validate the bundle (ignoring any old signature), then write signature.json. Returns the key id."""
    path = Path(bundle_dir)
    key = load_private_key(private_key_path)
    _load_contents(path)  # never sign a bundle that would be refused for its contents
    digests = {name: sha256_file(p) for name, p in _bundle_files(path).items()}
    document = sign_digests(digests, key)
    _write_atomic(path / SIGNATURE, _json_bytes(document))
    return str(document["key_id"])


# ---------------------------------------------------------------------------------------------- load


def make_session(model: bytes) -> Any:
    """The onnxruntime session the agent uses: one intra-op and one inter-op thread, sequential.

    PERFORMANCE-NOTES: more threads never helped a GRU step and were 2-4x slower on a busy machine.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only: the agent logs refusals itself
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def _check_signature(
    path: Path, trusted_keys: Sequence[Path | str], allow_unsigned: bool
) -> tuple[str | None, bool]:
    sig_path = path / SIGNATURE
    if not sig_path.exists():
        if allow_unsigned:
            return None, False
        raise BundleError(
            "unsigned",
            f"{path} has no {SIGNATURE}; sign it with `gruwatch bundle sign {path} --key KEYDIR/signing.key`",
        )
    try:
        document = json.loads(sig_path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError("bad_signature", f"{SIGNATURE} is not valid JSON") from exc
    trusted = load_public_keys(trusted_keys)
    kid, digests, verified = verify_signature(document, trusted, require_trusted=not allow_unsigned)
    files = _bundle_files(path)
    for name, digest in sorted(digests.items()):
        if name not in files:
            raise BundleError("missing_file", f"{name} is listed in {SIGNATURE} but not in the bundle")
        if sha256_file(files[name]) != digest:
            raise BundleError("digest_mismatch", f"{name} changed after the bundle was signed")
    extra = sorted(set(files) - set(digests))
    if extra:
        raise BundleError(
            "digest_mismatch", f"{', '.join(extra)} not covered by the signature; remove or re-sign"
        )
    return kid, verified


def _read_json(path: Path, reason: str) -> Any:
    if not path.is_file():
        raise BundleError("missing_file", f"{path.name} is missing from {path.parent}")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(reason, f"{path.name} is not valid JSON: {exc}") from exc


def _dims(meta: Any) -> list[int | str | None]:
    return [d if isinstance(d, int) else (str(d) if d is not None else None) for d in meta.shape]


def check_shapes(session: Any, F: int, state_shape: tuple[int, int], K: int) -> None:
    layers, hidden = state_shape
    ins = {i.name: i for i in session.get_inputs()}
    outs = {o.name: o for o in session.get_outputs()}
    if set(ins) != {"features", "h"}:
        raise BundleError("shape", f"model inputs are {sorted(ins)}, expected ['features', 'h']")
    if not {"score", "h_out"} <= set(outs):
        raise BundleError("shape", f"model outputs are {sorted(outs)}, expected 'score' and 'h_out'")
    want: dict[str, tuple[Any, list[int | None]]] = {
        "features": (ins["features"], [None, F]),
        "h": (ins["h"], [layers, None, hidden]),
        "score": (outs["score"], [None, K]),
        "h_out": (outs["h_out"], [layers, None, hidden]),
    }
    for name, (meta, expected) in want.items():
        if meta.type != "tensor(float)":
            raise BundleError("shape", f"{name} is {meta.type}, expected tensor(float)")
        dims = _dims(meta)
        if len(dims) != len(expected):
            raise BundleError("shape", f"{name} has rank {len(dims)}, expected {len(expected)}")
        for axis, (got, exp) in enumerate(zip(dims, expected, strict=True)):
            if exp is None:  # the batch axis: must not be frozen to a number (dynamo with a B=1 example)
                if isinstance(got, int):
                    raise BundleError(
                        "shape", f"{name} axis {axis} is fixed to {got}; the batch axis must be dynamic"
                    )
            elif isinstance(got, int) and got != exp:
                raise BundleError("shape", f"{name} axis {axis} is {got}, the card says {exp}")
    # Declared shapes can lie or be symbolic: run B=1 and B=3 and check what comes out.
    for B in (1, 3):
        try:
            score, h_out = session.run(
                ["score", "h_out"],
                {
                    "features": np.zeros((B, F), dtype=np.float32),
                    "h": np.zeros((layers, B, hidden), dtype=np.float32),
                },
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError("shape", f"model does not run with batch {B}: {exc}") from exc
        if score.shape != (B, K) or h_out.shape != (layers, B, hidden):
            raise BundleError(
                "shape",
                f"batch {B}: model gave score {score.shape} and h_out {h_out.shape}, "
                f"expected {(B, K)} and {(layers, B, hidden)}",
            )


def _array(value: Any, shape: tuple[int, ...], what: str) -> npt.NDArray[np.float32]:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise BundleError("test_vectors", f"{what} is not a numeric array") from exc
    if arr.shape != shape:
        raise BundleError("test_vectors", f"{what} has shape {arr.shape}, expected {shape}")
    if not np.isfinite(arr).all():
        raise BundleError("test_vectors", f"{what} holds non-finite numbers")
    return arr


def replay_test_vectors(session: Any, tv: Any, F: int, state_shape: tuple[int, int], K: int) -> int:
    """Step the model through every test vector from its h0; BundleError("test_vectors") on mismatch.

    Returns how many steps were checked.
    """
    if not isinstance(tv, dict) or not isinstance(tv.get("vectors"), list) or not tv["vectors"]:
        raise BundleError("test_vectors", "test_vectors.json needs a non-empty 'vectors' list")
    atol = tv.get("atol")
    if not isinstance(atol, int | float) or isinstance(atol, bool) or not (0 < atol <= MAX_ATOL):
        raise BundleError("test_vectors", f"atol must be a number in (0, {MAX_ATOL}], got {atol!r}")
    layers, hidden = state_shape
    steps = 0
    for i, vec in enumerate(tv["vectors"]):
        if not isinstance(vec, dict):
            raise BundleError("test_vectors", f"vector {i} is not an object")
        feats = np.asarray(vec.get("features", []), dtype=object)
        T = len(feats) if feats.ndim >= 1 else 0
        if T < 1:
            raise BundleError("test_vectors", f"vector {i} has no steps")
        x = _array(vec["features"], (T, F), f"vector {i} features")
        h = _array(vec.get("h0"), (layers, 1, hidden), f"vector {i} h0")
        expected = _array(vec.get("scores"), (T, K), f"vector {i} scores")
        h_final = _array(vec.get("h_final"), (layers, 1, hidden), f"vector {i} h_final")
        for t in range(T):
            score, h = session.run(["score", "h_out"], {"features": x[t : t + 1], "h": h})
            err = float(np.max(np.abs(score[0] - expected[t])))
            if not err <= atol:
                raise BundleError(
                    "test_vectors",
                    f"vector {i} step {t}: scores differ by {err:.3g} > atol {atol}; the model is not "
                    "the one the test vectors were made with (or this runtime computes differently)",
                )
            steps += 1
        err = float(np.max(np.abs(h - h_final)))
        if not err <= atol:
            raise BundleError("test_vectors", f"vector {i}: final state differs by {err:.3g} > atol {atol}")
    return steps


def _load_contents(path: Path) -> tuple[dict[str, Any], FeatureSpec, Any]:
    """Everything but the signature: card, digests, feature spec, model shapes, test vectors."""
    if not path.is_dir():
        raise BundleError("missing_file", f"{path} is not a folder; unpack an archived bundle first")
    card = validate_card(_read_json(path / CARD, "bad_card"))
    for name, digest in sorted(card["files"].items()):
        if not (path / name).is_file():
            raise BundleError("missing_file", f"{name} is named in card.json but missing from {path}")
        if sha256_file(path / name) != digest:
            raise BundleError("digest_mismatch", f"{name} does not match its sha256 in card.json")
    try:
        spec = FeatureSpec.from_dict(card["feature_spec"])
    except FeatureError as exc:
        raise BundleError(
            "feature_spec", f"{exc}; this gruwatch cannot compute the features the model was trained on"
        ) from exc
    try:
        session = make_session((path / MODEL).read_bytes())
    except Exception as exc:  # onnxruntime's own exception types (InvalidGraph, Fail, ...)
        raise BundleError("bad_model", f"onnxruntime cannot load model.onnx: {exc}") from exc
    state_shape = (int(card["state_shape"][0]), int(card["state_shape"][1]))
    F, K = int(spec.n_features), len(card["outputs"])
    check_shapes(session, F, state_shape, K)
    tv = _read_json(path / TEST_VECTORS, "test_vectors")
    replay_test_vectors(session, tv, F, state_shape, K)
    return card, spec, session


def load_bundle(
    path: Path | str, *, trusted_keys: Sequence[Path | str] = (), allow_unsigned: bool = False
) -> Bundle:
    """Load and validate a bundle folder; raises BundleError(reason, detail), reasons in BUNDLE_REASONS.

    Checks, in order: the signature (unless `allow_unsigned`, it must exist and be by a key in
    `trusted_keys`: files or folders of `*.pub`), every file against the signed digests, card.json
    against schema 1, every file against the card's digests, the feature spec, the model's input
    and output names and shapes (running batch 1 and 3), and finally replays the test vectors.
    With `allow_unsigned` a signature by an unknown key is not an error, but its digests must still
    match and a signature by a trusted key must still verify.
    """
    p = Path(path)
    if not p.is_dir():
        raise BundleError("missing_file", f"bundle folder {p} does not exist")
    kid, verified = _check_signature(p, trusted_keys, allow_unsigned)
    card, spec, session = _load_contents(p)
    return Bundle(
        path=p,
        card=card,
        spec=spec,
        session=session,
        state_shape=(int(card["state_shape"][0]), int(card["state_shape"][1])),
        outputs=tuple(card["outputs"]),
        thresholds=Thresholds.from_dict(card["thresholds"]),
        key_id=kid,
        verified=verified,
        trained_on=TrainedOn.from_card(card),
    )


# ------------------------------------------------------------------------------------------- archive


def pack_bundle(bundle_dir: Path | str) -> bytes:
    """The bundle as one uncompressed tar: sorted names, zero times/owners, mode 0644 (deterministic)."""
    path = Path(bundle_dir)
    if not path.is_dir():
        raise BundleError("missing_file", f"bundle folder {path} does not exist")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        entries = sorted(path.iterdir())
        for entry in entries:
            if entry.is_symlink() or not entry.is_file():
                raise BundleError("bad_archive", f"{entry.name} is not a plain file; bundles are flat")
            data = entry.read_bytes()
            info = tarfile.TarInfo(entry.name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack_bundle(
    data: bytes, dest: Path | str, *, max_bytes: int = MAX_BUNDLE_BYTES, max_files: int = MAX_FILES
) -> Path:
    """Unpack a `pack_bundle` tar into the new or empty folder `dest`; returns it (not yet validated).

    BundleError("bad_archive") for anything but a flat set of plain files with safe names, for
    duplicates, more than `max_files` files, or more than `max_bytes` in all (also when packed).
    Call `load_bundle` on the result.
    """
    if len(data) > max_bytes + 512 * (2 * max_files + 2) + tarfile.RECORDSIZE:  # headers, padding
        raise BundleError("bad_archive", f"archive is {len(data)} bytes, more than allowed ({max_bytes})")
    out = Path(dest)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError("bad_archive", f"{out} exists and is not an empty folder")
    members: list[tuple[str, bytes]] = []
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                name = info.name
                if not info.isreg():
                    raise BundleError(
                        "bad_archive", f"{name!r} is not a plain file (links and folders refused)"
                    )
                if not _NAME.fullmatch(name) or name.startswith("."):
                    raise BundleError("bad_archive", f"{name!r} is not a safe flat file name")
                if any(name == n for n, _ in members):
                    raise BundleError("bad_archive", f"{name!r} appears twice")
                if len(members) >= max_files:
                    raise BundleError("bad_archive", f"more than {max_files} files")
                total += info.size
                if total > max_bytes:
                    raise BundleError("bad_archive", f"files add up to more than {max_bytes} bytes")
                fh = tar.extractfile(info)
                if fh is None:
                    raise BundleError("bad_archive", f"{name!r} cannot be read")
                members.append((name, fh.read()))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError("bad_archive", f"not a readable tar archive: {exc}") from exc
    if not members:
        raise BundleError("bad_archive", "the archive is empty")
    out.mkdir(parents=True, exist_ok=True)
    for name, content in members:
        (out / name).write_bytes(content)
    return out
