"""Demo data: the category taxonomy every install needs, and fictional people for trying the product."""
