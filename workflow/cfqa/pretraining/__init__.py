"""Building the embedded base model: sentencepiece tokenizer, tiny T5, span corruption."""
