"""TTL classes: how long kvtierd keeps the blocks a request publishes.

kvtier's classes are Anthropic's cache_control TTLs (docs/http-api.md):
"5m" and "1h". A vLLM request names its class in its kv_transfer_params,

    SamplingParams(extra_args={"kv_transfer_params": {"kvtier_ttl": "1h"}})

and requests that name none get the engine's default class
(kv_connector_extra_config "ttl_class", "5m" unless set). The engine may
define its own classes with kv_connector_extra_config "ttl_classes":
{"name": seconds, ...}, which replaces the two.
"""
from typing import Mapping, Optional

DEFAULT_CLASSES = {"5m": 300, "1h": 3600}
DEFAULT_CLASS = "5m"
REQUEST_PARAM = "kvtier_ttl"  # the kv_transfer_params key a request sets

# kvtierd takes a block TTL up to 7 days (proto ttl_seconds).
MAX_TTL_SECONDS = 7 * 24 * 3600


class UnknownTtlClass(ValueError):
    """A request or config names a class that is not defined."""


class TtlClasses:
    """Class name -> ttl_seconds for BatchPut. Immutable."""

    def __init__(self, classes: Optional[Mapping[str, int]] = None,
                 default: str = DEFAULT_CLASS):
        classes = dict(DEFAULT_CLASSES if classes is None else classes)
        if not classes:
            raise ValueError("ttl_classes is empty; define at least one class")
        for name, seconds in classes.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"a TTL class name must be a non-empty string, not {name!r}")
            if (not isinstance(seconds, int) or isinstance(seconds, bool)
                    or not 0 < seconds <= MAX_TTL_SECONDS):
                raise ValueError(
                    f"TTL class {name!r} is {seconds!r} seconds; it must be an integer in "
                    f"1..{MAX_TTL_SECONDS}")
        if default not in classes:
            raise UnknownTtlClass(
                f"the default TTL class {default!r} is not one of {', '.join(sorted(classes))}")
        self._classes = classes
        self.default = default

    @property
    def names(self):
        return sorted(self._classes)

    def seconds(self, name: str) -> int:
        """The TTL of class `name`; UnknownTtlClass names the defined ones."""
        try:
            return self._classes[name]
        except (KeyError, TypeError):
            raise UnknownTtlClass(
                f"TTL class {name!r} is not one of {', '.join(self.names)}") from None

    def for_request(self, kv_transfer_params: Optional[Mapping]) -> int:
        """The TTL of a request: its kv_transfer_params' class, or the default."""
        name = self.default
        if kv_transfer_params and REQUEST_PARAM in kv_transfer_params:
            name = kv_transfer_params[REQUEST_PARAM]
        return self.seconds(name)
