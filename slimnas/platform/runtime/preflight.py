"""Checks made before a job starts work: addresses answer, servers are up, inputs exist.

Each check raises :class:`~slimnas.errors.InputError` with one line naming the field and what is wrong, so that
``slimnas run``/``submit`` fail in seconds instead of after training. Network checks use short timeouts: an address
that does not answer within them is reported as unreachable (a blackholed host would otherwise hang for minutes).
"""

from __future__ import annotations

import os
import socket
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from slimnas.errors import InputError, os_error_reason, path_error, shorten

if TYPE_CHECKING:
    from slimnas.platform.pipeline.config import PipelineConfig
    from slimnas.platform.stages.search_config import RaySection, SearchJobConfig

__all__ = ["check_tcp", "check_ray_address", "check_tracking_uri", "check_pipeline", "check_search_job",
           "check_output_dir", "check_output_file", "check_port", "check_batch_fits", "check_local_ray", "split_url",
           "memory_bytes"]

TIMEOUT_S = 5.0
#: A batch whose input tensors and first activations (this many times the input) exceed the memory is refused.
_ACTIVATION_FACTOR = 4


# ---------------------------------------------------------------------------------------------------- addresses
def split_url(address: str, what: str, default_scheme: str = "tcp") -> urllib.parse.SplitResult:
    """``urlsplit(address)`` (``host:port`` gets ``default_scheme``); a malformed address or port raises
    ``InputError`` naming ``what``."""
    text = address.strip()
    if not text or not text.isprintable():
        raise InputError(f"{what}: expected an address like host:port, got {shorten(repr(address))}")
    try:
        parsed = urllib.parse.urlsplit(text if "://" in text or not default_scheme else f"{default_scheme}://{text}")
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise InputError(f"{what}: malformed address {shorten(repr(address))} ({exc})") from None
    if parsed.port == 0:
        raise InputError(f"{what}: port 0 in {shorten(repr(address))}; expected a port from 1 to 65535")
    return parsed


def check_tcp(host: str, port: int, what: str, timeout: float = TIMEOUT_S) -> None:
    """Raise ``InputError`` unless a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except (OSError, UnicodeError) as exc:
        if isinstance(exc, TimeoutError):
            reason = "timed out"
        elif isinstance(exc, socket.gaierror):
            reason = "unknown host"
        else:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(f"{what}: cannot reach {shorten(host)}:{port} ({reason})") from None


def _host_port(address: str, default_port: int, what: str) -> tuple[str, int]:
    parsed = split_url(address, what)
    if not parsed.hostname:
        raise InputError(f"{what}: expected host:port, got {shorten(repr(address))}")
    return parsed.hostname, parsed.port or default_port


def check_ray_address(address: str | None, what: str = "ray.address") -> None:
    """A Ray cluster address (``host:6379``, ``ray://host:10001``) answers; ``auto``/``local`` are left to Ray.
    With no address, ``$RAY_ADDRESS`` is checked the same way (``init_ray`` connects to it)."""
    if not address and what == "ray.address" and os.environ.get("RAY_ADDRESS"):
        address, what = os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    if not address or address in ("auto", "local"):
        return
    default = 10001 if address.startswith("ray://") else 6379
    check_tcp(*_host_port(address, default, what), what)


def check_tracking_uri(uri: str, what: str = "tracking.tracking_uri") -> None:
    """An MLflow server (``http(s)://``) answers ``/health``; a ``sqlite:///`` store's folder exists or can be made."""
    parsed = split_url(uri, what, default_scheme="")
    scheme = parsed.scheme
    if scheme in ("http", "https"):
        if not parsed.hostname:
            raise InputError(f"{what}: expected http(s)://HOST[:PORT], got {shorten(repr(uri))}")
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - http(s) only
                if response.status != 200:
                    raise InputError(f"{what}: the MLflow server at {shorten(uri)} answered {response.status} on "
                                     f"/health")
        except urllib.error.HTTPError as exc:
            raise InputError(f"{what}: the MLflow server at {shorten(uri)} answered {exc.code} on /health") from None
        except (urllib.error.URLError, OSError, ValueError, UnicodeError) as exc:
            reason = getattr(exc, "reason", exc)
            reason = "timed out" if isinstance(reason, TimeoutError) else shorten(reason)
            raise InputError(f"{what}: cannot reach the MLflow server at {shorten(uri)} ({reason})") from None
    elif scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if path and path != ":memory:":
            folder = Path(path).expanduser().parent
            check_output_file(Path(path).expanduser(), what)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise path_error(what, folder, exc) from None
    elif scheme in ("", "file"):
        raise InputError(f"{what}: {shorten(repr(uri))} is a plain file store (MLflow 3 keeps it in maintenance "
                         f"mode); use sqlite:///PATH/mlflow.db or an http(s):// server")


def check_port(host: str, port: int, what: str = "--port") -> None:
    """``host:port`` can be listened on here: the port is in range and free, and ``host`` is this machine's."""
    if not 1 <= port <= 65535:
        raise InputError(f"{what}: expected a port from 1 to 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InputError(f"--host: unknown host {shorten(repr(host))}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        if os.name == "posix":  # as servers bind: a port whose last connections linger in TIME_WAIT is free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            import errno

            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"{what}: {shorten(host)}:{port} is in use") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InputError(f"--host: {shorten(host)} is not an address of this machine") from None
            raise InputError(f"{what}: cannot listen on {shorten(host)}:{port} ({os_error_reason(exc)})") from None


# ---------------------------------------------------------------------------------------------------- paths
def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_output_dir(path: str | os.PathLike, what: str, shown_as: str | os.PathLike | None = None) -> None:
    """``path`` is, or can be made, a folder this process writes in; creates nothing.

    One-line ``InputError`` naming ``what`` and the path (``shown_as``, when given) for: a name longer than the file
    system allows, a path under an existing file, an existing file where the folder should be, a folder without write
    permission, and a file system with no space left.
    """
    target = Path(os.path.abspath(Path(path).expanduser()))
    shown = shorten(os.fspath(shown_as if shown_as is not None else path), 160)
    if len(os.fsencode(os.fspath(target))) >= 4096:
        raise InputError(f"{what}: {shown}: the path is longer than the file system allows")
    probe = target
    while True:  # the nearest folder that exists
        try:
            info = probe.stat()
            break
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                raise InputError(f"{what}: {shown}: no existing folder above it") from None
            probe = probe.parent
        except OSError as exc:
            raise path_error(what, shown, exc) from None
    if not stat.S_ISDIR(info.st_mode):
        where = "it" if probe == target and shown_as is None else shorten(os.fspath(probe), 160)
        raise InputError(f"{what}: {shown}: {where} is a file, not a folder")
    limit = _name_max(probe)
    for part in target.relative_to(probe).parts:
        if len(os.fsencode(part)) > limit:
            raise InputError(f"{what}: {shown}: the name {shorten(part, 40)!r} is longer than the file system "
                             f"allows ({limit} bytes)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{what}: {shown}: permission denied (cannot write in {shorten(os.fspath(probe), 160)})")
    try:
        fs = os.statvfs(probe)
    except OSError:
        return
    if fs.f_bavail * fs.f_frsize < 2**20:
        raise InputError(f"{what}: {shown}: no space left on the device ({fs.f_bavail * fs.f_frsize} bytes free)")


def check_output_file(path: str | os.PathLike, what: str) -> None:
    """``path`` can be written as a file: not a folder, a name the file system allows, and a folder that can be made
    and written (see :func:`check_output_dir`); creates nothing."""
    file = Path(os.path.abspath(Path(path).expanduser()))
    shown = shorten(os.fspath(path), 160)
    try:
        if file.is_dir():
            raise InputError(f"{what}: {shown} is a folder, not a file")
    except OSError as exc:
        raise path_error(what, path, exc) from None
    check_output_dir(file.parent, what, shown_as=path)
    if len(os.fsencode(file.name)) > _name_max(file.parent if file.parent.is_dir() else Path("/")):
        raise InputError(f"{what}: {shown}: the file name is longer than the file system allows")


# ---------------------------------------------------------------------------------------------------- sizes
def memory_bytes() -> int:
    """This machine's physical memory in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 0


def check_local_ray(ray: RaySection) -> None:
    """A local Ray (no ``ray.address``, no ``$RAY_ADDRESS``) whose object store cannot fit in this machine's memory
    is refused before it starts."""
    if ray.address or os.environ.get("RAY_ADDRESS"):
        return
    have = memory_bytes()
    if have and ray.object_store_mb * 2**20 > have:
        raise InputError(f"ray.object_store_mb: {ray.object_store_mb} MiB is more than this machine's memory "
                         f"({have // 2**20} MiB)")


def check_batch_fits(batch: int, img_size: int, what: str, bytes_per_value: int = 4) -> None:
    """Refuse a batch whose input images and first activations cannot fit in this machine's memory, before any of
    it is allocated."""
    need = batch * 3 * img_size * img_size * bytes_per_value * _ACTIVATION_FACTOR
    have = memory_bytes()
    if have and need > have:
        raise InputError(f"{what}: a batch of {batch} images of {img_size}x{img_size} needs at least "
                         f"{need / 2**30:.1f} GiB; this machine has {have / 2**30:.1f} GiB")


def _table_problem(exc: InputError) -> str:
    """A table loader's message without its ``lut:`` prefix (the caller names the field)."""
    text = str(exc)
    return text[len("lut: "):] if text.startswith("lut: ") else text


def check_pipeline(cfg: PipelineConfig, force: Iterable[str] = ()) -> int:
    """Every input of a pipeline, before any work; returns the data's number of classes.

    Checked, in order: the addresses (Ray, MLflow: seconds at most), the output folders and the table's path, the
    data and weight files, sizes that cannot fit in memory, the backend, and an existing table that the job would
    reuse (readable, a slimnas table of the space, measured with the config's settings), unless ``force`` names the
    table stage (or ``all``), which rebuilds it. Creates the output folder only once everything passed.
    """
    from slimnas.latency.backends import get_backend
    from slimnas.platform.stages.training import check_inputs
    from slimnas.search_spaces import SearchSpace

    forced = set(force)
    check_ray_address(cfg.ray.address)
    check_local_ray(cfg.ray)
    if cfg.train.distributed.enabled:
        check_ray_address(cfg.train.distributed.address, "train.distributed.address")
    if cfg.tracking.enabled:
        check_tracking_uri(cfg.tracking_uri())
    output = cfg.output_dir
    check_output_dir(output, "output")
    if cfg.train.run.out_dir != str(output):
        check_output_dir(cfg.train.run.out_dir, "train.run.out_dir")
    check_output_file(cfg.table_path, "latency.table")
    num_classes = check_inputs(cfg.train)
    if cfg.search.data is not None:
        from slimnas.trainers import check_data

        try:
            check_data(cfg.search.data)
        except InputError as exc:
            raise InputError(f"search.{exc}") from None
    space = SearchSpace.resolve(cfg.train.space)
    if not cfg.train.distributed.enabled:
        check_batch_fits(cfg.train.data.batch_size, space.img_size, "train.data.batch_size")
    if cfg.latency.resources is None:
        check_batch_fits(cfg.latency.batch, space.img_size, "latency.batch")
    if cfg.search.predictor == "calibrated" and cfg.latency.validate_.num_archs == 0:
        raise InputError("search.predictor: 'calibrated' needs the validation's fitted predictor; set "
                         "latency.validate.num_archs (at least 6) or use predictor 'table'")
    rebuild = bool(forced & {"table", "all"})
    if cfg.table_path.exists() and not rebuild:
        from slimnas.platform.stages.latency import reusable_table

        try:
            reusable_table(cfg.latency, cfg.table_path, space, num_classes)
        except InputError as exc:
            problem = _table_problem(exc)
            raise InputError(problem if problem.startswith("latency.table:") else f"latency.table: {problem}") \
                from None
    elif cfg.latency.resources is None:
        # measured here: the backend must run here (a remote task checks on its node)
        reason = get_backend(cfg.latency.backend, **cfg.latency.backend_settings()).unavailable_reason()
        if reason:
            raise InputError(f"latency.backend: {cfg.latency.backend} cannot run here ({reason}); set "
                             f"latency.resources to measure on a cluster node that has the device")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise path_error("output", output, exc) from None
    return num_classes


def check_search_job(cfg: SearchJobConfig) -> None:
    """The inputs of a search job (``slimnas search`` / ``sweep``) that can be checked without loading the supernet,
    before any work: the addresses (Ray, MLflow), the output folder, the latency table (readable, a slimnas table)
    and the calibration file. (The supernet, its space against the table's and the data are checked next, by
    :func:`~slimnas.platform.stages.search.run_search_job`, before Ray starts.)"""
    from slimnas.config import read_text_file
    from slimnas.latency import LatencyTable
    from slimnas.platform.tracking.store import default_tracking_uri as tracking_uri

    check_ray_address(cfg.ray.address)
    check_local_ray(cfg.ray)
    if cfg.tracking.enabled:
        check_tracking_uri(tracking_uri(cfg.tracking.tracking_uri))
    check_output_dir(cfg.job_dir(), "output")
    supernet = Path(cfg.supernet).expanduser()
    try:
        exists = supernet.exists()
    except OSError as exc:
        raise path_error("supernet", supernet, exc) from None
    if not exists:
        raise InputError(f"supernet: no such file or folder {shorten(cfg.supernet, 160)}")
    if supernet.is_file():
        import zipfile

        try:
            is_zip = zipfile.is_zipfile(supernet)  # torch.save writes zip archives
        except OSError as exc:
            raise path_error("supernet", supernet, exc) from None
        if not is_zip:
            raise InputError(f"supernet: {shorten(cfg.supernet, 160)} is not a slimnas checkpoint (not a PyTorch "
                             f"checkpoint file)")
    try:
        table = LatencyTable.load(cfg.latency.table)
    except InputError as exc:
        raise InputError(f"latency.table: {_table_problem(exc)}") from None
    except OSError as exc:
        raise path_error("latency.table", cfg.latency.table, exc) from None
    if cfg.latency.calibration:
        from slimnas.latency import CalibratedPredictor

        read_text_file(cfg.latency.calibration, "latency.calibration")
        try:
            CalibratedPredictor.load(cfg.latency.calibration, table)
        except InputError as exc:
            text = str(exc)
            raise InputError(text.replace("calibration:", "latency.calibration:", 1)
                             if text.startswith("calibration:") else text) from None
