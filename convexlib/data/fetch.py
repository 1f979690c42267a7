"""Checksummed download of the public data files into the data-root layout (``python -m convexlib.data fetch``).

Downloads go through :mod:`pooch`, which streams each file to a temporary name in the target folder, checks its
sha256 and only then moves it into place, so an interrupted or wrong download never leaves a file behind.

Hashes
    Every file whose bytes are in ``../shared/data`` has its full sha256 pinned in :data:`REGISTRY`. Files that
    could not be obtained when the registry was written (the 4.7 M THINGS-data triplets) have ``sha256=None``:
    their hash is recorded in ``<data root>/fetch-hashes.json`` at the first download ("trust on first use")
    and every later fetch or ``verify`` checks the file against it.

Offline
    The first connection error or timeout (``timeout`` seconds to connect, default 10) stops the whole fetch
    with one :class:`FetchError` saying that the host could not be reached; folders created for the failed
    file are removed again.

Mirror
    ``mirror="file:///path/to/data"`` (or an ``https://`` base URL) takes every file from ``<mirror>/<layout
    path>`` instead of its original URL, with the same hash checks. ``file://`` URLs are copied locally.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import ConvexlibError
from ..paths import data_root
from . import layout

PathLike = str | os.PathLike

__all__ = ["RemoteFile", "REGISTRY", "GROUPS", "FetchError", "fetch", "verify", "derive_kriegeskorte92"]


class FetchError(ConvexlibError, RuntimeError):
    """A download failed (unreachable host, HTTP error, hash mismatch); nothing partial was left behind."""


@dataclass(frozen=True)
class RemoteFile:
    """One public file of the data-root layout.

    Attributes
    ----------
    path : str
        Path relative to the data root (the layout of ``../shared/data``).
    url : str
        Original public source.
    sha256 : str or None
        Full sha256 of the expected bytes; ``None``: recorded at first download, verified afterwards.
    group : str
        Name used by ``--only`` / ``groups=``.
    note : str
        Provenance (repository, commit) or a caveat about the URL.
    """

    path: str
    url: str
    sha256: str | None
    group: str
    note: str = ""


def _gh(owner_repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{owner_repo}/{commit}/{urllib.parse.quote(path)}"


_THINGSVISION = ("ViCCo-Group/thingsvision", "57e91c9754dfea8579ffc58c0ae42d9dc60080af")
_VICE_DATA = ("LukasMut/VICE", "f484c1446459c12c15deb2df1476f53969ad6f4d")
_VICE_EMB = ("LukasMut/VICE", "5f80103ef4c9eb29477c4cadb1c9c54476d59e97")
_THINGS_DATA = ("ViCCo-Group/THINGS-data", "5e0eccac51eac78b57045f5b90b4f53814f56c32")
_GLOCAL = ("LukasMut/gLocal", "635fdaa5b36e810f626125104fb9eb11ea89a75d")
_RSATOOLBOX = ("rsagroup/rsatoolbox", "f1f83cadb7243492a1aae7460466e0f0140b20ac")

_GLOCAL_TRANSFORMS = {
    "OpenCLIP_ViT-L-14_laion2b_s32b_b82k/visual": "38ac3e412c0b42fcdc1e545383ca6c1363472809b2611d0e4f4bf8d5878f7365",
    "OpenCLIP_ViT-L-14_laion400m_e32/visual": "1c34c877528ea375836a2f1a8b8559070a3eadf5a5f8064bb970c1526751a915",
    "clip_RN50/visual": "81fc831f60c43ded3508f36803e48d105560fb4992bbbe7b1db1745c83af1c4b",
    "clip_ViT-L/14/visual": "4d9f969b1cac5334e87c93a6743a50e0f7d38cb41d7e8fb701584bc29d2fe25a",
    "dino-vit-base-p16/norm": "2bcb2d77346fbaec29326edc54bc03060145ecbb1fb5d80c3c7733241a71dd69",
    "dino-vit-base-p8/norm": "583ff8178d769e687f7444be935e444e831bf501c8c5343debe69b57cef660cc",
    "dinov2-vit-base-p14/norm": "2bcb2d77346fbaec29326edc54bc03060145ecbb1fb5d80c3c7733241a71dd69",
    "dinov2-vit-large-p14/norm": "b3da393252d7d8407a745762b06863333793e002970d2a143f121f75e626d694",
    "resnet18/avgpool": "7a2bb20c8662eff5b3c0e27e5614b56be782479ec99d26d1ffd01a01777d7d3c",
}

#: Every downloadable file, its original URL and (where known) its full sha256.
REGISTRY: tuple[RemoteFile, ...] = (
    # THINGS concept table (thingsvision; blob unchanged since commit 1eefa70d, 2022-08-22)
    RemoteFile(layout.THINGS_CONCEPTS, _gh(*_THINGSVISION, "data/files/things_concepts.tsv"),
               "f6eb4ec6fcad61e50a746bee820f98d1595fe655e9e210a9a407e9a17fd8cee4", "things",
               "ViCCo-Group/thingsvision@57e91c97 data/files/things_concepts.tsv"),
    RemoteFile(layout.THINGS_ITEM_NAMES, _gh(*_THINGSVISION, "data/files/item_names.tsv"),
               "03dbe77972f9466ff8baa0da604d9f5104f677bf77cc602faebfa03a290fb51c", "things",
               "ViCCo-Group/thingsvision@57e91c97 data/files/item_names.tsv"),
    # VICE repository: 27-category matrix, 2020 noise-ceiling triplets, order permutation (deleted in later commits)
    RemoteFile(layout.CATEGORY_MAT_MANUAL, _gh(*_VICE_DATA, "data/category_mat_manual.tsv"),
               "9f4f9a4626f23064dad9a7547ffa1e3a0a6b1fe23281d74cb394ee0367f53af4", "vice",
               "LukasMut/VICE@f484c144 data/category_mat_manual.tsv"),
    RemoteFile(layout.TEST_TRIPLETS, _gh(*_VICE_DATA, "data/test_triplets.csv"),
               "f2593378408f54fb047b2f9be040e2773be8f24118bc171d46c2c6a6da79afd4", "vice",
               "LukasMut/VICE@f484c144 data/test_triplets.csv (Hebart et al. 2020 noise-ceiling set)"),
    RemoteFile(layout.SORTINDEX, _gh(*_VICE_DATA, "data/sortindex"),
               "37720adbfbdc9637c1be642ed296c3bc2afbe1d2831418b7a9f941bc03d65a08", "vice",
               "LukasMut/VICE@f484c144 data/sortindex (saved as sortindex.txt)"),
    RemoteFile(layout.VICE_EMBEDDING, _gh(*_VICE_EMB, "embeddings/things/final_embedding.npy"),
               "6c596ec9fe6e135e3fd32207d4d1d5eb004e3cef3810d5cb40474b1996d5392f", "vice",
               "LukasMut/VICE@5f80103e embeddings/things/final_embedding.npy"),
    # THINGS-data repository: THINGS+ 53 categories and ratings
    RemoteFile(layout.THINGSPLUS_CATEGORIES, _gh(*_THINGS_DATA, "MRI/data/Categories_final_20200131.tsv"),
               "968d45a1a2fb8def83b33661031a1c473a61a8fe208c8c0af3474784c6bbcd95", "things-data",
               "ViCCo-Group/THINGS-data@5e0eccac MRI/data/Categories_final_20200131.tsv"),
    RemoteFile(layout.THINGS_ANIMACY, _gh(*_THINGS_DATA, "MRI/data/animacy.csv"),
               "e5163a8d68a2704cf0d14e8b5c002963e180aba79e76d13653bcba854e8cf644", "things-data",
               "ViCCo-Group/THINGS-data@5e0eccac MRI/data/animacy.csv"),
    RemoteFile(layout.THINGS_SIZE, _gh(*_THINGS_DATA, "MRI/data/size_fixed.csv"),
               "6a14e7f359e2698231b49210aeb5e4a6878f1337aa19529b04220bac172ea042", "things-data",
               "ViCCo-Group/THINGS-data@5e0eccac MRI/data/size_fixed.csv"),
    # Kriegeskorte et al. 2008 / Mur et al. 2013 (rsatoolbox demo data); the rest of kriegeskorte92/ is derived
    RemoteFile(layout.KRIEGESKORTE_SUPPL_MAT,
               _gh(*_RSATOOLBOX, "demos/92imageData/Kriegeskorte_Neuron2008_supplementalData.mat"),
               "06f21214399a5d43dc264eed19a7f4b8daf11c8622a59eec3e106064ce5e3504", "kriegeskorte92",
               "rsagroup/rsatoolbox@f1f83cad demos/92imageData/"),
    RemoteFile(layout.KRIEGESKORTE_BEHAV_MAT, _gh(*_RSATOOLBOX, "demos/92imageData/92_behavRDMs.mat"),
               "7a8e118c144c3840adeeeef6ea0706a0be2b3e80df719af15fbb56fc62562f5f", "kriegeskorte92",
               "rsagroup/rsatoolbox@f1f83cad demos/92imageData/"),
    # gLocal transforms
    *(
        RemoteFile(f"{layout.GLOCAL_TRANSFORMS_DIR}/{name}/transform.npz",
                   _gh(*_GLOCAL, f"transforms/{name}/transform.npz"), sha, "glocal",
                   f"LukasMut/gLocal@635fdaa5 transforms/{name}/transform.npz")
        for name, sha in _GLOCAL_TRANSFORMS.items()
    ),
    # THINGS-data behavioural release (4.70 M triplets). Not obtainable here: hash recorded at first download.
    RemoteFile(layout.THINGS_TRIPLETS_CSV, "https://osf.io/download/h2smy/", None, "things-triplets",
               "OSF project f5rn6 (THINGS-data behaviour). The file id h2smy is taken from public third-party "
               "code and was NOT verified here; the hash is recorded at first download."),
)  # fmt: skip

#: Group names, in registry order.
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(f.group for f in REGISTRY))


# ----------------------------------------------------------------------------------------------------------------
# hashing and the record of first-download hashes
# ----------------------------------------------------------------------------------------------------------------


def sha256_file(path: PathLike) -> str:
    """Full sha256 (hex) of a file."""
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def _read_recorded(root: Path) -> dict[str, str]:
    path = root / layout.RECORDED_HASHES
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FetchError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc
    if not isinstance(data, dict):
        raise FetchError(f"{path} must hold a JSON object mapping layout paths to sha256 hashes")
    return {str(k): str(v) for k, v in data.items()}


def _write_recorded(root: Path, recorded: dict[str, str]) -> None:
    path = root / layout.RECORDED_HASHES
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".fetch-hashes-", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(sorted(recorded.items())), fh, indent=2)
        fh.write("\n")
    _default_mode(tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
# downloaders
# ----------------------------------------------------------------------------------------------------------------


def _copy_local(url: str, output_file: str, pooch_obj=None) -> None:
    """pooch downloader for ``file://`` URLs: copy the local file (pooch still hashes and moves it)."""
    src = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    shutil.copyfile(src, output_file)


def _downloader_for(url: str, timeout: float, progress: bool) -> Callable:
    if url.startswith("file://"):
        return _copy_local
    import pooch

    # (connect, read) timeouts: a missing network fails within `timeout` seconds; slow big files may still stream
    return pooch.HTTPDownloader(progressbar=progress, timeout=(timeout, max(60.0, timeout)))


def _request_errors() -> tuple[type[BaseException], ...]:
    import requests

    return (requests.exceptions.RequestException,)


def _new_dirs(target_dir: Path, root: Path) -> list[Path]:
    """Folders between ``root`` and ``target_dir`` (inclusive) that do not exist yet, deepest first."""
    out = []
    d = target_dir
    while d != root and not d.exists():
        out.append(d)
        d = d.parent
    return out


def _remove_empty(dirs: Iterable[Path]) -> None:
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            pass


def _offline_message(entry: RemoteFile, url: str, exc: BaseException) -> str:
    host = urllib.parse.urlparse(url).netloc or url
    return (
        f"cannot download {entry.path}: {host} could not be reached ({type(exc).__name__}: {exc}).\n"
        "You appear to be offline (or the host is down). Nothing partial was written. Either run the fetch "
        "again with internet access, or point $CONVEXLIB_DATA (or --root) at an existing copy of the data "
        "root, e.g. ../shared/data, or pass --mirror file:///path/to/a/copy."
    )


# ----------------------------------------------------------------------------------------------------------------
# fetch and verify
# ----------------------------------------------------------------------------------------------------------------


def _select(registry: Sequence[RemoteFile], groups: Iterable[str] | None) -> list[RemoteFile]:
    known = tuple(dict.fromkeys(f.group for f in registry))
    if groups is None:
        return list(registry)
    wanted = list(groups)
    unknown = [g for g in wanted if g not in known]
    if unknown:
        raise ValueError(f"unknown group(s) {unknown}; choose from {list(known)}")
    return [f for f in registry if f.group in wanted]


def fetch(
    root: PathLike | None = None,
    *,
    groups: Iterable[str] | None = None,
    registry: Sequence[RemoteFile] = REGISTRY,
    mirror: str | None = None,
    timeout: float = 10.0,
    progress: bool = True,
    derive: bool = True,
    log: Callable[[str], None] | None = print,
) -> list[Path]:
    """Download the public data files into the data-root layout, each checked against its sha256.

    Parameters
    ----------
    root : path, optional
        Target data root (created if needed); default ``$CONVEXLIB_DATA`` or ``<repo>/data``.
    groups : iterable of str, optional
        Only these groups of :data:`GROUPS` (default all).
    registry : sequence of RemoteFile
        The files to fetch (default :data:`REGISTRY`).
    mirror : str, optional
        Base URL (``https://...`` or ``file:///...``) laid out like the data root, used instead of the
        original URLs.
    timeout : float
        Seconds to wait for a connection before declaring the host unreachable.
    progress : bool
        Show download progress bars.
    derive : bool
        Derive the extracted files of ``kriegeskorte92/`` from its two ``.mat`` files.
    log : callable, optional
        Receives one line per file (default ``print``; ``None`` for silence).

    Returns
    -------
    list of Path
        The files now present and verified.

    Raises
    ------
    FetchError
        Unreachable host (stops at the first one), HTTP error or hash mismatch. The failed file is not written.
    """
    import pooch

    say = log or (lambda _msg: None)
    base = data_root(root, must_exist=False)
    entries = _select(registry, groups)
    created_root = _new_dirs(base, Path(base.anchor))
    base.mkdir(parents=True, exist_ok=True)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # one line per file is printed here instead of pooch's own messages
    try:
        return _fetch_entries(base, entries, mirror, timeout, progress, derive, say)
    except FetchError:
        _remove_empty(created_root)
        raise
    finally:
        logger.setLevel(level)


def _fetch_entries(
    base: Path,
    entries: Sequence[RemoteFile],
    mirror: str | None,
    timeout: float,
    progress: bool,
    derive: bool,
    say: Callable[[str], None],
) -> list[Path]:
    import pooch

    recorded = _read_recorded(base)
    done: list[Path] = []
    for entry in entries:
        target = base / entry.path
        expected = entry.sha256 or recorded.get(entry.path)
        if target.is_file():
            have = sha256_file(target)
            if expected is None:
                recorded[entry.path] = have
                _write_recorded(base, recorded)
                say(f"present   {entry.path}  (hash recorded: {have[:16]}...)")
                done.append(target)
                continue
            if have == expected:
                say(f"present   {entry.path}  (sha256 ok)")
                done.append(target)
                continue
            say(f"mismatch  {entry.path}  (local sha256 {have[:16]}... != {expected[:16]}...); downloading again")
        url = f"{mirror.rstrip('/')}/{urllib.parse.quote(entry.path)}" if mirror else entry.url
        new_dirs = _new_dirs(target.parent, base)
        try:
            pooch.retrieve(
                url,
                known_hash=None if expected is None else f"sha256:{expected}",
                fname=target.name,
                path=target.parent,
                downloader=_downloader_for(url, timeout, progress),
            )
        except ValueError as exc:  # pooch: hash mismatch (the temporary file is already deleted)
            _remove_empty(new_dirs)
            origin = "pinned" if entry.sha256 else f"recorded at first download in {layout.RECORDED_HASHES}"
            raise FetchError(
                f"{entry.path}: the file downloaded from {url} does not have the expected sha256 ({origin}); "
                f"it was not kept.\n{exc}"
            ) from exc
        except _request_errors() as exc:
            _remove_empty(new_dirs)
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status is not None:
                raise FetchError(f"cannot download {entry.path} from {url}: HTTP {status}. {entry.note}") from exc
            raise FetchError(_offline_message(entry, url, exc)) from exc
        except OSError as exc:
            _remove_empty(new_dirs)
            raise FetchError(f"cannot fetch {entry.path} from {url}: {exc}") from exc
        _default_mode(target)
        if expected is None:
            recorded[entry.path] = sha256_file(target)
            _write_recorded(base, recorded)
            say(f"fetched   {entry.path}  (first download; sha256 recorded in {layout.RECORDED_HASHES})")
        else:
            say(f"fetched   {entry.path}  (sha256 ok)")
        done.append(target)
    if derive and any(e.group == "kriegeskorte92" for e in entries):
        derived = derive_kriegeskorte92(base)
        say(f"derived   {layout.KRIEGESKORTE_DIR}/  ({len(derived)} files from the two .mat files)")
    return done


def verify(root: PathLike | None = None, registry: Sequence[RemoteFile] = REGISTRY) -> dict[str, str]:
    """Check the files of a data root against the pinned or recorded hashes, without any network access.

    Returns
    -------
    dict
        layout path -> ``"ok"``, ``"mismatch"``, ``"missing"`` or ``"unpinned"`` (present, no hash known yet).
    """
    base = data_root(root)
    recorded = _read_recorded(base)
    status = {}
    for entry in registry:
        target = base / entry.path
        expected = entry.sha256 or recorded.get(entry.path)
        if not target.is_file():
            status[entry.path] = "missing"
        elif expected is None:
            status[entry.path] = "unpinned"
        else:
            status[entry.path] = "ok" if sha256_file(target) == expected else "mismatch"
    return status


# ----------------------------------------------------------------------------------------------------------------
# kriegeskorte92: derived files
# ----------------------------------------------------------------------------------------------------------------

_K92_VECTOR_FIELDS = ("category", "human", "face", "animal", "natural")


def _default_mode(path: PathLike) -> None:
    """Give a file the permissions of a newly created file (temporary files are created 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        _default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def derive_kriegeskorte92(root: PathLike | None = None) -> list[Path]:
    """Extract the images, stimulus table and RDMs of ``kriegeskorte92/`` from its two ``.mat`` files.

    Writes (atomically, no resampling) ``images/NN.png`` (92 lossless 175x175 RGB images),
    ``stimuli.tsv`` (index, image_file, category, human, face, animal, natural and the 12 category vectors),
    ``rdm_hIT.npy``, ``rdm_mIT.npy`` (92x92, from the condensed RDMs) and ``rdms_behav_simjudge.npy``
    (16x92x92, the similarity-judgement RDMs). The result equals the folder in ``../shared/data``.

    Returns
    -------
    list of Path
        The files written.
    """
    import pandas as pd
    import scipy.io
    from PIL import Image
    from scipy.spatial.distance import squareform

    base = data_root(root)
    folder = base / layout.KRIEGESKORTE_DIR
    suppl = folder / Path(layout.KRIEGESKORTE_SUPPL_MAT).name
    behav = folder / Path(layout.KRIEGESKORTE_BEHAV_MAT).name
    for p in (suppl, behav):
        if not p.is_file():
            raise FetchError(f"{p} is missing; run `python -m convexlib.data fetch --only kriegeskorte92` first")
    m = scipy.io.loadmat(suppl, squeeze_me=True, struct_as_record=False)
    b = scipy.io.loadmat(behav, squeeze_me=True, struct_as_record=False)
    stimuli = np.atleast_1d(m["stimuli_92objs"])
    vectors = np.asarray(m["categoryVectors"])
    vector_names = [str(x) for x in np.atleast_1d(m["categoryLabels"])]
    if len(stimuli) != 92 or vectors.shape != (92, len(vector_names)):
        raise FetchError(f"{suppl}: unexpected content (stimuli {len(stimuli)}, categoryVectors {vectors.shape})")
    written: list[Path] = []
    (folder / "images").mkdir(exist_ok=True)
    rows = []
    for i, s in enumerate(stimuli):
        img = np.asarray(s.image, dtype=np.uint8)
        rel = f"images/{i:02d}.png"
        out = folder / rel
        _atomic_write(out, lambda tmp, img=img: Image.fromarray(img, "RGB").save(tmp, format="PNG"))
        written.append(out)
        rows.append([i, rel] + [getattr(s, f) for f in _K92_VECTOR_FIELDS] + vectors[i].astype(int).tolist())
    table = pd.DataFrame(rows, columns=["index", "image_file", *_K92_VECTOR_FIELDS, *vector_names])
    out = folder / Path(layout.KRIEGESKORTE_STIMULI).name
    _atomic_write(out, lambda tmp: table.to_csv(tmp, sep="\t", index=False))
    written.append(out)
    rdms = {str(r.name): np.asarray(r.RDM, dtype=np.float64) for r in np.atleast_1d(m["RDMs_mIT_hIT_fig1"])}
    for fname, key in (("rdm_hIT.npy", "hITvisStim_316vx"), ("rdm_mIT.npy", "mIT_674neurons")):
        if key not in rdms:
            raise FetchError(f"{suppl}: RDM {key!r} not found (have {list(rdms)})")
        out = folder / fname
        mat = squareform(rdms[key])
        _atomic_write(out, lambda tmp, mat=mat: np.save(tmp, mat))
        written.append(out)
    behav_rdms = np.stack([np.asarray(r.RDM, dtype=np.float64) for r in np.atleast_1d(b["rdms_behav_92"])])
    out = folder / Path(layout.KRIEGESKORTE_SIMJUDGE).name
    _atomic_write(out, lambda tmp: np.save(tmp, behav_rdms))
    written.append(out)
    return written
