"""Cloud deployment helpers: the names Terraform uses, generated from the contract."""
