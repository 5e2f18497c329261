"""bastion.filters"""
