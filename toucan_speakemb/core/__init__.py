"""The ground floor every stage stands on: errors, atomic safetensors/JSON files, the profile registry
(which Toucan space a vector lives in), the embedding set, the built-in population and plotting helpers.
It imports nothing else of the project.
"""
