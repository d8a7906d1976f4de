"""Natural Questions: download, format conversion and fast reading of the simplified format.

The simplified format (one JSON record per line) is the one raw format of the pipeline:
`example_id, question_text, document_text, long_answer_candidates, annotations`, spans as
[start, end) token indices over `document_text.split(" ")`.
"""
