"""Integrations of fa4 with other libraries. Each lives in its own module and imports its library
only when that module is imported (fa4-torch depends on none of them):

* :mod:`fa4_torch.integrations.transformers`: ``attn_implementation="fa4"`` for Hugging Face
  transformers models (importing it registers the implementation).
"""
