"""Stanford Cars data: raw files -> prepared data (preparation), synthetic raw data, the dataset and the data
module, their settings and checks. Import from the modules; this package file imports nothing, so light tools
(``prepare_stanford_dataset.py``, ``python -m datasets.synthetic``) do not pay for importing torch."""
