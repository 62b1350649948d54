"""Province-level administrative division codes (GB/T 2260), the unit of an authorization's scope.

Only the two-digit province-level prefix is used: an operator authorizes a store to sell in whole
provinces, autonomous regions and municipalities, never in a prefecture or county.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

PROVINCES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "11": "Beijing",
        "12": "Tianjin",
        "13": "Hebei",
        "14": "Shanxi",
        "15": "Inner Mongolia",
        "21": "Liaoning",
        "22": "Jilin",
        "23": "Heilongjiang",
        "31": "Shanghai",
        "32": "Jiangsu",
        "33": "Zhejiang",
        "34": "Anhui",
        "35": "Fujian",
        "36": "Jiangxi",
        "37": "Shandong",
        "41": "Henan",
        "42": "Hubei",
        "43": "Hunan",
        "44": "Guangdong",
        "45": "Guangxi",
        "46": "Hainan",
        "50": "Chongqing",
        "51": "Sichuan",
        "52": "Guizhou",
        "53": "Yunnan",
        "54": "Tibet",
        "61": "Shaanxi",
        "62": "Gansu",
        "63": "Qinghai",
        "64": "Ningxia",
        "65": "Xinjiang",
        "71": "Taiwan",
        "81": "Hong Kong",
        "82": "Macao",
    }
)
"""GB/T 2260 two-digit province-level codes mapped to their English names."""


PROVINCE_CODES: Final = frozenset(PROVINCES)
"""The keys of :data:`PROVINCES` as a set."""


def is_province_code(code: str) -> bool:
    """Return whether ``code`` is a two-digit GB/T 2260 province-level code."""
    return code in PROVINCES
