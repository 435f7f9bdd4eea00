"""Built-in models shipped with trilut (trained weights live beside their code)."""
