"""bastion.observe"""
