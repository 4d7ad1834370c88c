"""Build, launch, update and drain the Vitals Lake Dataflow Flex Template (the streaming pipeline).

    python infra/dataflow/flex.py --from-terraform infra/terraform build [--tag TAG]
    python infra/dataflow/flex.py --from-terraform infra/terraform run --tag TAG
    python infra/dataflow/flex.py --from-terraform infra/terraform update --tag TAG
    python infra/dataflow/flex.py --from-terraform infra/terraform drain

* ``build``: Cloud Build builds ``infra/dataflow/Dockerfile`` (launcher + workers + scheduled jobs, one
  image) as the image-build service account and pushes IMAGE_REPOSITORY:TAG; then
  ``gcloud dataflow flex-template build`` writes the template spec TEMPLATE_PREFIX/vitals-lake-TAG.json
  with ``infra/dataflow/metadata.json``. Prints the tag (Terraform's ``image_tag``) and the base images.
  The Dockerfile names its base images by release tag (``ARG LAUNCHER_IMAGE``, ``ARG BEAM_IMAGE``);
  ``build`` pins each to a digest, so the image is built from exactly what was resolved and the digests
  are recorded (printed, and in the image's labels): ``--base-digest ARG=sha256:...`` gives one (e.g. a
  vetted mirror's), otherwise it is resolved from the registry's HTTP API (Docker Registry v2, an
  anonymous pull token). A tag that cannot be resolved stops the build unless ``--allow-unpinned-base``.
* ``run``: launches the streaming job from that spec (private IPs, Streaming Engine, the Dataflow
  service account, the image as the workers' SDK container).
* ``update``: the same launch with ``--update``: Dataflow replaces the running job of the same name
  in place after checking compatibility (no data lost, state carried over).
* ``drain``: stops the running job after it has finished what it read (Delta commits included).

Settings come from Terraform's ``flex_template`` output (``--from-terraform DIR`` runs
``terraform -chdir=DIR output -json flex_template``) or a JSON file with the same keys (``--config``);
``--param name=value`` adds or overrides a template parameter. ``--dry-run`` prints the commands
instead of running them (tests/infra checks them; nothing here needs gcloud until it runs).
Use either these scripts or Terraform (``launch_pipeline = true``) to run the job, not both.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = HERE.parents[1]
METADATA: Final = HERE / "metadata.json"
DOCKERFILE: Final = HERE / "Dockerfile"
CLOUDBUILD: Final = HERE / "cloudbuild.yaml"
GCLOUDIGNORE: Final = HERE / ".gcloudignore"
NAMES: Final = REPO_ROOT / "infra" / "terraform" / "generated" / "names.json"
IMAGE_NAME: Final = "vitals-lake"
SDK_CONTAINER_PARAMETER: Final = "sdk_container_image"  # a Dataflow option, not one of metadata.json
# The Dockerfile's base images (its ARGs), pinned to digests by `build`.
BASE_IMAGE_ARGS: Final = ("LAUNCHER_IMAGE", "BEAM_IMAGE")
DIGEST_RE: Final = re.compile(r"sha256:[0-9a-f]{64}")
UNRESOLVED_DIGEST: Final = "sha256:<resolved when run>"  # what --dry-run shows for a digest not given
MANIFEST_TYPES: Final = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)

# Pipeline options (pipelines/options.py) that are deliberately NOT template parameters, and why.
# tests/infra/test_flex_template.py checks: every option is a parameter or listed here, never both.
NOT_TEMPLATE_PARAMETERS: Final = {
    "input_jsonl": "batch replay of a file: a one-off job, not the streaming template",
    "input_bronze": "batch rebuild from Bronze: a one-off job, not the streaming template",
    "lake_service_account": "workers use their own service account (ADC), never a key file",
    "bigquery_endpoint": "a BigQuery emulator for local runs and tests only",
    "batch_size": "records per batch of the batch replays only",
    "max_run_seconds": "a deadline for local DirectRunner runs only",
}

CONFIG_KEYS: Final = (
    "project_id",
    "region",
    "image_repository",
    "template_prefix",
    "staging_bucket",
    "service_account_email",
    "build_service_account",
    "subnetwork",
    "kms_key_name",
    "job_name",
    "machine_type",
    "num_workers",
    "max_workers",
    "parameters",
)


class FlexError(RuntimeError):
    """A setting is missing or a command failed."""


@dataclass(frozen=True)
class Config:
    """Terraform's ``flex_template`` output (see infra/terraform/outputs.tf)."""

    project_id: str
    region: str
    image_repository: str
    template_prefix: str
    staging_bucket: str
    service_account_email: str
    build_service_account: str
    subnetwork: str
    job_name: str
    machine_type: str
    num_workers: int
    max_workers: int
    parameters: dict[str, str] = field(default_factory=dict)
    kms_key_name: str | None = None

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Config:
        missing = [k for k in CONFIG_KEYS if k not in doc and k != "kms_key_name"]
        if missing:
            raise FlexError(f"flex_template settings lack {', '.join(missing)}")
        unknown = sorted(set(doc) - set(CONFIG_KEYS))
        if unknown:
            raise FlexError(f"flex_template settings have unknown keys {', '.join(unknown)}")
        return cls(
            **{
                k: doc[k]
                for k in CONFIG_KEYS
                if k in doc and k not in ("parameters", "num_workers", "max_workers")
            },
            num_workers=int(doc["num_workers"]),
            max_workers=int(doc["max_workers"]),
            parameters={str(k): str(v) for k, v in (doc.get("parameters") or {}).items()},
        )

    def image(self, tag: str) -> str:
        return f"{self.image_repository}:{tag}"

    def template_path(self, tag: str) -> str:
        return f"{self.template_prefix}/{IMAGE_NAME}-{tag}.json"


def template_parameters() -> dict[str, dict[str, Any]]:
    """metadata.json's parameters by name."""
    doc = json.loads(METADATA.read_text(encoding="utf-8"))
    return {p["name"]: p for p in doc["parameters"]}


def beam_version() -> str:
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("ARG BEAM_VERSION="):
            return line.split("=", 1)[1].strip()
    raise FlexError(f"{DOCKERFILE}: no ARG BEAM_VERSION=")


def dockerfile_args() -> dict[str, str]:
    """The Dockerfile's global ``ARG NAME=default`` values (before the first FROM), ``${NAME}`` expanded."""
    args: dict[str, str] = {}
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("FROM "):
            break
        found = re.fullmatch(r"ARG (\w+)=(\S+)", line.strip())
        if found:
            args[found[1]] = re.sub(r"\$\{(\w+)\}", lambda ref: args[ref[1]], found[2])
    return args


def base_images() -> dict[str, str]:
    """The base images as the Dockerfile names them (NAME:TAG), by their ARG."""
    args = dockerfile_args()
    missing = [a for a in BASE_IMAGE_ARGS if a not in args]
    if missing:
        raise FlexError(f"{DOCKERFILE}: no default for ARG {', '.join(missing)}")
    for arg in BASE_IMAGE_ARGS:
        ref = args[arg]
        if "@" in ref or ref.endswith(":latest") or ":" not in ref.rsplit("/", 1)[-1]:
            raise FlexError(f"{DOCKERFILE}: ARG {arg}={ref}: name an explicit tag (not latest, no digest)")
    return {arg: args[arg] for arg in BASE_IMAGE_ARGS}


def parse_reference(ref: str) -> tuple[str, str, str]:
    """(registry host, repository, tag) of ``NAME:TAG``; Docker Hub's short names expanded."""
    name, sep, tag = ref.rpartition(":")
    if not sep or not name or "/" in tag or "@" in ref:
        raise FlexError(f"{ref}: not an image NAME:TAG")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, rest
    else:
        host, repository = "docker.io", name if slash else f"library/{name}"
    if host == "docker.io":
        host = "registry-1.docker.io"
    return host, repository, tag


def _request(url: str, headers: dict[str, str], timeout: float, method: str = "GET") -> Any:
    request = urllib.request.Request(url, headers=headers, method=method)
    return urllib.request.urlopen(request, timeout=timeout)  # https; a test's fake registry: http


def _pull_token(challenge: str, timeout: float) -> str:
    """An anonymous pull token from the realm a registry's ``WWW-Authenticate: Bearer ...`` names."""
    scheme, _, params = challenge.partition(" ")
    fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
    if scheme.lower() != "bearer" or "realm" not in fields:
        raise FlexError(f"the registry asks for authentication this script cannot give: {challenge!r}")
    query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
    with _request(f"{fields['realm']}?{query}", {}, timeout) as resp:
        doc = json.loads(resp.read())
    token = doc.get("token") or doc.get("access_token")
    if not token:
        raise FlexError(f"{fields['realm']} gave no token")
    return str(token)


def resolve_digest(ref: str, *, scheme: str = "https", timeout: float = 30.0) -> str:
    """The digest ``NAME:TAG`` points at now (the manifest list's, for a multi-platform image), read with
    a HEAD request to the registry's v2 API."""
    host, repository, tag = parse_reference(ref)
    url = f"{scheme}://{host}/v2/{repository}/manifests/{tag}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        try:
            resp = _request(url, headers, timeout, method="HEAD")
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise
            token = _pull_token(exc.headers.get("WWW-Authenticate", ""), timeout)
            resp = _request(url, {**headers, "Authorization": f"Bearer {token}"}, timeout, method="HEAD")
        with resp:
            digest = str(resp.headers.get("Docker-Content-Digest", ""))
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        raise FlexError(f"cannot resolve {ref} to a digest: {exc}") from exc
    if not DIGEST_RE.fullmatch(digest):
        raise FlexError(f"{ref}: the registry answered no digest (Docker-Content-Digest {digest!r})")
    return digest


def pinned_base_images(
    given: dict[str, str],
    *,
    allow_unpinned: bool = False,
    dry_run: bool = False,
    resolve: Callable[[str], str] | None = None,
) -> dict[str, str]:
    """Each base image as ``NAME:TAG@sha256:...``: the digest given, else resolved (not in a dry run).
    Without a digest the build stops, unless ``allow_unpinned`` (then ``NAME:TAG``, with a warning)."""
    images = base_images()
    unknown = sorted(set(given) - set(images))
    if unknown:
        raise FlexError(f"--base-digest for no base image: {', '.join(unknown)} (known: {', '.join(images)})")
    pinned: dict[str, str] = {}
    for arg, ref in images.items():
        digest = given.get(arg)
        if digest is not None and not DIGEST_RE.fullmatch(digest):
            raise FlexError(f"--base-digest {arg}={digest}: not a sha256:<64 hex> digest")
        if digest is None and dry_run:
            digest = UNRESOLVED_DIGEST
        if digest is None:
            try:
                digest = (resolve or resolve_digest)(ref)
            except FlexError as exc:
                if not allow_unpinned:
                    raise FlexError(
                        f"{exc}\n(pass --base-digest {arg}=sha256:... , or --allow-unpinned-base to build"
                        " from the tag as it is at build time)"
                    ) from exc
                print(f"warning: {exc}; building {arg} from the bare tag {ref}", file=sys.stderr)
                pinned[arg] = ref
                continue
        pinned[arg] = f"{ref}@{digest}"
    return pinned


def pseudonym_secret() -> str:
    return str(json.loads(NAMES.read_text(encoding="utf-8"))["secrets"]["pseudonym_key"])


def default_tag(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")


def check_parameters(params: dict[str, str]) -> None:
    """Every parameter is a template parameter (or the SDK container) and every required one is set."""
    import re  # noqa: PLC0415

    known = template_parameters()
    unknown = sorted(set(params) - set(known) - {SDK_CONTAINER_PARAMETER})
    if unknown:
        raise FlexError(f"not template parameters (infra/dataflow/metadata.json): {', '.join(unknown)}")
    missing = sorted(n for n, p in known.items() if not p.get("isOptional") and not params.get(n))
    if missing:
        raise FlexError(f"required template parameters missing: {', '.join(missing)}")
    for name, value in params.items():
        for rx in known.get(name, {}).get("regexes", []):
            if not re.fullmatch(rx, value):
                raise FlexError(f"parameter {name}={value!r} does not match {rx}")


# --- commands ------------------------------------------------------------------------------------------
def build_commands(cfg: Config, tag: str, bases: dict[str, str]) -> list[list[str]]:
    """``bases``: :func:`pinned_base_images`, passed to the Dockerfile's ARGs of the same names."""
    image = cfg.image(tag)
    substitutions = ",".join(
        [
            f"_IMAGE={image}",
            f"_BEAM_VERSION={beam_version()}",
            f"_PSEUDONYM_SECRET={pseudonym_secret()}",
            *(f"_{arg}={bases[arg]}" for arg in BASE_IMAGE_ARGS),
        ]
    )
    return [
        [
            "gcloud",
            "builds",
            "submit",
            str(REPO_ROOT),
            f"--project={cfg.project_id}",
            f"--region={cfg.region}",
            f"--config={CLOUDBUILD}",
            f"--ignore-file={GCLOUDIGNORE.relative_to(REPO_ROOT)}",
            f"--substitutions={substitutions}",
            f"--service-account={cfg.build_service_account}",
            f"--gcs-source-staging-dir=gs://{cfg.staging_bucket}/cloudbuild/source",
        ],
        [
            "gcloud",
            "dataflow",
            "flex-template",
            "build",
            cfg.template_path(tag),
            f"--project={cfg.project_id}",
            f"--image={image}",
            "--sdk-language=PYTHON",
            f"--metadata-file={METADATA}",
        ],
    ]


def run_command(cfg: Config, tag: str, *, update: bool = False) -> list[str]:
    params = {**cfg.parameters, SDK_CONTAINER_PARAMETER: cfg.image(tag)}
    check_parameters(params)
    if any("~" in v for v in params.values()):
        raise FlexError("a parameter value contains '~', the delimiter used to pass them")
    argv = [
        "gcloud",
        "dataflow",
        "flex-template",
        "run",
        cfg.job_name,
        f"--project={cfg.project_id}",
        f"--region={cfg.region}",
        f"--template-file-gcs-location={cfg.template_path(tag)}",
        f"--service-account-email={cfg.service_account_email}",
        f"--staging-location=gs://{cfg.staging_bucket}/staging",
        f"--temp-location=gs://{cfg.staging_bucket}/temp",
        f"--subnetwork={cfg.subnetwork}",
        "--disable-public-ips",
        "--enable-streaming-engine",
        f"--worker-machine-type={cfg.machine_type}",
        f"--num-workers={cfg.num_workers}",
        f"--max-workers={cfg.max_workers}",
    ]
    if cfg.kms_key_name:
        argv.append(f"--dataflow-kms-key={cfg.kms_key_name}")
    if update:
        argv.append("--update")
    argv.append("--parameters=^~^" + "~".join(f"{k}={v}" for k, v in sorted(params.items())))
    return argv


def find_job_command(cfg: Config) -> list[str]:
    return [
        "gcloud",
        "dataflow",
        "jobs",
        "list",
        f"--project={cfg.project_id}",
        f"--region={cfg.region}",
        "--status=active",
        f"--filter=name={cfg.job_name}",
        "--format=value(JOB_ID)",
    ]


def drain_command(cfg: Config, job_id: str) -> list[str]:
    return [
        "gcloud",
        "dataflow",
        "jobs",
        "drain",
        job_id,
        f"--project={cfg.project_id}",
        f"--region={cfg.region}",
    ]


# --- running -------------------------------------------------------------------------------------------
def _show(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def _execute(argv: Sequence[str], *, capture: bool = False) -> str:
    print(f"+ {_show(argv)}", file=sys.stderr)
    try:
        out = subprocess.run(list(argv), check=False, text=True, capture_output=capture, cwd=REPO_ROOT)
    except OSError as exc:
        raise FlexError(f"{argv[0]} could not run ({exc}): install the Google Cloud CLI") from exc
    if out.returncode != 0:
        raise FlexError(f"command failed (exit {out.returncode}): {_show(argv)}\n{out.stderr or ''}")
    return out.stdout or ""


def load_config(args: argparse.Namespace) -> Config:
    if args.config:
        doc = json.loads(Path(args.config).read_text(encoding="utf-8"))
    elif args.from_terraform:
        out = _execute(
            ["terraform", f"-chdir={args.from_terraform}", "output", "-json", "flex_template"], capture=True
        )
        doc = json.loads(out)
    else:
        raise FlexError("say where the settings come from: --from-terraform DIR or --config FILE")
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise FlexError(f"--param needs name=value, got {item!r}")
        doc.setdefault("parameters", {})[name] = value
    if args.job_name:
        doc["job_name"] = args.job_name
    return Config.from_dict(doc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python infra/dataflow/flex.py", description=(__doc__ or "").split("\n")[0]
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--from-terraform", metavar="DIR", help="read Terraform's flex_template output in DIR"
    )
    source.add_argument("--config", metavar="FILE", help="a JSON file with the flex_template output's keys")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="set a parameter")
    parser.add_argument("--job-name", help="override the job name")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build and push the image, write the template spec")
    build.add_argument("--tag", default=None, help="image tag (default: UTC time, YYYYMMDD-HHMMSS)")
    build.add_argument(
        "--base-digest",
        action="append",
        default=[],
        metavar="ARG=sha256:DIGEST",
        help=f"the digest of a base image ({', '.join(BASE_IMAGE_ARGS)}), instead of resolving its tag",
    )
    build.add_argument(
        "--allow-unpinned-base",
        action="store_true",
        help="build from a base image's bare tag when its digest cannot be resolved (not reproducible)",
    )
    for name, what in (("run", "launch the streaming job"), ("update", "replace the running job in place")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--tag", required=True, help="the tag `build` printed")
    sub.add_parser("drain", help="drain the running job")
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args)
        bases: dict[str, str] = {}
        if args.command == "build":
            tag = args.tag or default_tag()
            given = {}
            for item in args.base_digest:
                name, sep, digest = item.partition("=")
                if not sep:
                    raise FlexError(f"--base-digest needs ARG=sha256:..., got {item!r}")
                given[name] = digest
            bases = pinned_base_images(given, allow_unpinned=args.allow_unpinned_base, dry_run=args.dry_run)
            commands = build_commands(cfg, tag, bases)
        elif args.command in ("run", "update"):
            tag = args.tag
            commands = [run_command(cfg, tag, update=args.command == "update")]
        else:
            tag = ""
            if args.dry_run:
                commands = [find_job_command(cfg), drain_command(cfg, "$JOB_ID")]
            else:
                ids = _execute(find_job_command(cfg), capture=True).split()
                if not ids:
                    raise FlexError(f"no active job named {cfg.job_name} in {cfg.region}")
                commands = [drain_command(cfg, job_id) for job_id in ids]
        if args.dry_run:
            for command in commands:
                print(_show(command))
        else:
            for command in commands:
                _execute(command)
        if args.command == "build":
            print(f'image_tag = "{tag}"  # template {cfg.template_path(tag)}')
            for arg, ref in bases.items():
                print(f"# base image {arg} = {ref}")
    except FlexError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
