"""bastion.net"""
