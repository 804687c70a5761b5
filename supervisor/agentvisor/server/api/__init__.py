"""The host API's routes and their request and response models, the request limits
and the per-sandbox connection gate."""
