"""Where the package's shipped files live: the ament share directory when installed with colcon,
else the source tree (pip editable install / a plain clone)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = 'rt_safe_rl'
_SRC_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """Directory holding config/, launch/, models/ and description/ for this installation."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory(PACKAGE))
        if (share / 'config').is_dir():
            return share
    except Exception:  # ament index absent or package not registered: source tree
        pass
    return _SRC_ROOT


def config_path(name: str) -> Path:
    """Path of a shipped config file, e.g. ``config_path('default.yaml')``."""
    return share_dir() / 'config' / name


def package_file(relative: str) -> Path:
    """Path of a file shipped inside the Python package (models/, description/, dashboards/)."""
    return Path(__file__).resolve().parent / relative


def resolve(path: str | Path, base: Path | None = None) -> Path:
    """Resolve ``package://rt_safe_rl/<rel>`` and relative paths (against `base`, else cwd)."""
    s = str(path)
    prefix = f'package://{PACKAGE}/'
    if s.startswith(prefix):
        rel = s[len(prefix) :]
        inside = package_file(rel)
        return inside if inside.exists() else share_dir() / rel
    p = Path(s).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return p
