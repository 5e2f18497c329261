"""bastion.balance"""
