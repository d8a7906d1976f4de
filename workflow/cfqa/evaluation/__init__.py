"""Generation and scoring of a fine-tuned method on the test and seen question sets."""
