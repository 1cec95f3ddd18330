"""What one request is: its facts, its data class, its token and cost bounds.

Pure code over the parsed body and headers: the facts the router needs (kind,
model, tags, images, stream) in :mod:`.facts`; privacy over every string of the
body in :mod:`.scan`: text folded by :mod:`.normalise`, PII found by
:mod:`.privacy` (built-in detectors in :mod:`.pii_email` and :mod:`.pii_numbers`,
checksums in :mod:`.checksums`, and a route's custom patterns), the class raised
or the values masked (:mod:`.masking`); and the prices and worst-case bounds a
budget reservation needs in :mod:`.pricing`.
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
from .masking import Masking, StreamRestorer, placeholder
from .normalise import normalise
from .pii_numbers import PiiKind
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
from .privacy import (
    CustomPatterns,
    Finding,
    custom_patterns,
    detect,
    detection_can_raise,
    effective_class,
    find_in,
)
from .scan import Assessment, Hit, PrivacyAction, assess, local_action, scan_document

__all__ = [
    "HEADER_BATCH_SIZE",
    "HEADER_COMPLEXITY",
    "HEADER_DATA_CLASS",
    "HEADER_QUALITY",
    "HEADER_USER",
    "IMAGE_TOKENS",
    "ZERO_PRICE",
    "Assessment",
    "CustomPatterns",
    "Finding",
    "Headers",
    "Hit",
    "Kind",
    "Masking",
    "PiiKind",
    "PrivacyAction",
    "RequestFacts",
    "StreamRestorer",
    "assess",
    "build_facts",
    "builtin_price",
    "cost",
    "custom_patterns",
    "detect",
    "detection_can_raise",
    "effective_class",
    "find_in",
    "image_tokens_for",
    "listed_price",
    "local_action",
    "normalise",
    "placeholder",
    "price_for",
    "prompt_token_bound",
    "scan_document",
    "worst_case_cost",
]
