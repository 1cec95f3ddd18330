"""What one request is: its facts, its data class, its token and cost bounds.

Pure code over the parsed body and headers: the facts the router needs (kind,
model, tags, images, stream), PII detection that may raise the data class, and
the prices and worst-case bounds a budget reservation needs.
"""
