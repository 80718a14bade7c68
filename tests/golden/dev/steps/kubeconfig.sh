sudo cat /etc/kubernetes/admin.conf
