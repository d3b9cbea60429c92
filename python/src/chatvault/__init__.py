"""chatvault: end-to-end encrypted chat backups, the device API (uniffi bindings of chatvault-ffi).

Everything is re-exported from the generated bindings (`chatvault._ffi`); this file only makes
an error's text its human-readable `detail` (`str(e)`), instead of the generated field listing.
"""

from ._ffi import *  # noqa: F401,F403
from ._ffi import ChatvaultError


def _detail(self):
    return self.detail


for _name in dir(ChatvaultError):
    _variant = getattr(ChatvaultError, _name)
    if isinstance(_variant, type) and issubclass(_variant, ChatvaultError):
        _variant.__str__ = _detail
del _name, _variant
