"""What one request is: its facts, its data class, its token and cost bounds.

Pure code over the parsed body and headers: the facts the router needs (kind,
model, tags, images, stream) in :mod:`.facts`, PII detection that may raise the
data class in :mod:`.privacy` (with the checksums that keep it precise in
:mod:`.checksums`), and the prices and worst-case bounds a budget reservation
needs in :mod:`.pricing`.
"""

from .facts import (
    HEADER_BATCH_SIZE,
    HEADER_COMPLEXITY,
    HEADER_DATA_CLASS,
    HEADER_QUALITY,
    HEADER_USER,
    Headers,
    Kind,
    RequestFacts,
    build_facts,
)
from .pricing import (
    IMAGE_TOKENS,
    ZERO_PRICE,
    builtin_price,
    cost,
    image_tokens_for,
    listed_price,
    price_for,
    prompt_token_bound,
    worst_case_cost,
)
from .privacy import PiiKind, detect, detection_can_raise, effective_class

__all__ = [
    "HEADER_BATCH_SIZE",
    "HEADER_COMPLEXITY",
    "HEADER_DATA_CLASS",
    "HEADER_QUALITY",
    "HEADER_USER",
    "IMAGE_TOKENS",
    "ZERO_PRICE",
    "Headers",
    "Kind",
    "PiiKind",
    "RequestFacts",
    "build_facts",
    "builtin_price",
    "cost",
    "detect",
    "detection_can_raise",
    "effective_class",
    "image_tokens_for",
    "listed_price",
    "price_for",
    "prompt_token_bound",
    "worst_case_cost",
]
