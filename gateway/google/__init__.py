"""Everything that speaks Google's wire format: the OAuth client, its error tree, retries.

No other package builds a Google URL or parses a Google error body; they call in here and
catch `gateway.google.errors.GoogleError`.
"""
