"""`gruwatch keys ...` and `gruwatch bundle ...`: make signing keys, sign, verify and pack model bundles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Imported here, not in the functions, so a missing extra (cryptography, onnxruntime) is reported by
# the `gruwatch` dispatcher with the extra to install.
import onnxruntime  # noqa: F401  (the 'agent' extra; load_bundle needs it)

from edge_agent import bundle as b
from edge_agent.errors import BundleError
from edge_agent.signing import generate_keypair, key_id, load_private_key
from gruwatch.options import Parser

KEYS_HELP = """\
Make an Ed25519 key pair for signing model bundles.

  gruwatch keys new --out keys/

writes keys/signing.key (private, PEM PKCS8, mode 0600: keep it on the training machine, never on
a gateway) and keys/signing.pub (public, PEM). Copy signing.pub to each agent's trusted keys; the
agent then accepts only bundles signed with signing.key. Existing keys are never overwritten.
"""

BUNDLE_HELP = """\
Sign, verify and pack model bundles (folders written by `gruwatch train`).

  gruwatch bundle sign BUNDLE --key keys/signing.key
  gruwatch bundle verify BUNDLE --trusted-keys keys/signing.pub [more.pub | folder-of-pubs ...]
  gruwatch bundle pack BUNDLE --out model.tar
  gruwatch bundle unpack model.tar --out BUNDLE

`verify` runs exactly the checks the agent runs before it swaps models (signature, digests, card,
feature spec, model shapes, test-vector replay) and exits 1 with the reason when one fails.
"""


def keys_main(argv: list[str]) -> int:
    parser = Parser(
        prog="gruwatch keys", description=KEYS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = sub.add_parser("new", help="write signing.key and signing.pub into a folder")
    new.add_argument("--out", type=Path, required=True, help="folder for signing.key and signing.pub")
    args = parser.parse_args(argv)

    try:
        key_path, pub_path = generate_keypair(args.out)
    except FileExistsError as exc:
        sys.stderr.write(f"gruwatch keys: {exc}\n")
        return 1
    kid = key_id(load_private_key(key_path).public_key())
    sys.stdout.write(
        f"key id {kid}\n  private: {key_path} (keep secret)\n  public:  {pub_path} (give to agents)\n"
    )
    return 0


def bundle_main(argv: list[str]) -> int:
    parser = Parser(
        prog="gruwatch bundle", description=BUNDLE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sign = sub.add_parser("sign", help="validate a bundle and write its signature.json")
    sign.add_argument("bundle", type=Path, help="bundle folder written by `gruwatch train`")
    sign.add_argument("--key", type=Path, required=True, help="private key from `gruwatch keys new`")
    verify = sub.add_parser("verify", help="run the agent's checks on a bundle")
    verify.add_argument("bundle", type=Path, help="bundle folder to check")
    verify.add_argument(
        "--trusted-keys", type=Path, nargs="+", default=[], help="public key files or folders of *.pub"
    )
    verify.add_argument(
        "--allow-unsigned", action="store_true", help="accept a bundle without a trusted signature"
    )
    pack = sub.add_parser("pack", help="one deterministic tar of a bundle folder, for transport")
    pack.add_argument("bundle", type=Path, help="bundle folder to pack")
    pack.add_argument("--out", type=Path, required=True, help="the archive file to write (e.g. model.tar)")
    unpack = sub.add_parser("unpack", help="a packed bundle back into a new folder (then verify it)")
    unpack.add_argument("archive", type=Path, help="an archive written by `gruwatch bundle pack`")
    unpack.add_argument("--out", type=Path, required=True, help="folder for the bundle (missing or empty)")
    args = parser.parse_args(argv)

    try:
        if args.action == "sign":
            kid = b.sign_bundle(args.bundle, args.key)
            sys.stdout.write(f"signed {args.bundle} with key {kid}\n")
        elif args.action == "verify":
            loaded = b.load_bundle(
                args.bundle, trusted_keys=args.trusted_keys, allow_unsigned=args.allow_unsigned
            )
            signer = (
                f"signed by trusted key {loaded.key_id}"
                if loaded.verified
                else f"signature by untrusted key {loaded.key_id}"
                if loaded.key_id
                else "unsigned"
            )
            t = loaded.thresholds
            sys.stdout.write(
                f"ok: {args.bundle} model {loaded.model_version} ({signer})\n"
                f"  features {loaded.spec.name} v{loaded.spec.version} (F={loaded.n_features}), "
                f"state {list(loaded.state_shape)}, outputs {list(loaded.outputs)}\n"
                f"  thresholds warning {t.warning:g} alarm {t.alarm:g}, "
                f"raise after {t.raise_windows} windows, clear after {t.clear_windows}\n"
                f"  trained on {loaded.trained_on.describe() if loaded.trained_on else 'not recorded'}\n"
            )
        elif args.action == "pack":
            data = b.pack_bundle(args.bundle)
            args.out.write_bytes(data)
            sys.stdout.write(f"wrote {args.out} ({len(data)} bytes)\n")
        else:
            out = b.unpack_bundle(args.archive.read_bytes(), args.out)
            sys.stdout.write(f"unpacked into {out}; check it with `gruwatch bundle verify {out} ...`\n")
    except BundleError as exc:
        sys.stderr.write(f"gruwatch bundle {args.action}: refused ({exc.reason}): {exc.detail}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"gruwatch bundle {args.action}: {exc}\n")
        return 1
    return 0
