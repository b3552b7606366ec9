"""PVTT packing: WebDataset triplets, the dataset index and card, and `python -m pvtt data`."""
