"""Teaching: the computations behind the Learn page's lessons and the concept notebooks."""
