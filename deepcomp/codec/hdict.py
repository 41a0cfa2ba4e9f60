"""The preset DEFLATE dictionary of version-2 headers (prefix flag 1; docs/FORMAT.md 7.1).

A small file's header is mostly the same JSON every deepcomp file repeats: the tensor
table's encodings and model keys, the graph's node and attribute keys, the pipeline's
meta keys. Deflate can point back into a preset dictionary for the first occurrence of
each, which a small header otherwise pays for in literals (a planned LeNet file's
header: 588 -> about 210 bytes). The bytes are fixed forever: a changed dictionary
is a new flag (dictionary 2 below extends this one). Fragments, least common first
(deflate's distances to the end of the dictionary are the cheapest), joined without
separators; docs/FORMAT.md lists the same lines and a test checks that they agree.
"""
from __future__ import annotations

FRAGMENTS = (
    '"storage":"float16"}],"shared_dense",{"k":"shared_sparse",{"nnz":"index_bits":"raw",4],',
    '{"name":"batch_norm","op":"batch_norm","inputs":["eps":1e-05,"momentum":',
    '{"format":"deepcomp-graph","version":2,"inputs":[{"name":"x","dtype":"float32",',
    '"shape":["batch",3,null,null]}],"symbols":{"batch":[1,null]},"nodes":[{"name":"conv2d",',
    '"op":"conv2d","in":["x"],"a":{"w":"features.0.0.weight","b":"features.0.0.bias",',
    '"stride":[1,1],"padding":[1,1],"dilation":[1,1],"groups":1}},{"name":"relu","op":"relu",',
    '"in":["conv2d"],"a":{}},{"name":"linear","op":"linear","in":["flatten"],"a":{"w":"',
    '{"name":"add","op":"add","inputs":[',
    '{"name":"max_pool2d","op":"max_pool2d","inputs":["relu"],"attrs":{"kernel_size":[2,2],',
    '"stride":[2,2],"padding":[0,0],"dilation":[1,1],"ceil_mode":false}},',
    '{"name":"conv2d","op":"conv2d","inputs":["x"],"attrs":{"weight":"conv1.weight",',
    '"bias":"conv1.bias","in_channels":3,"out_channels":64,"kernel_size":[3,3],',
    '"stride":[1,1],"padding":[1,1],"dilation":[1,1],"groups":1}},',
    '{"name":"relu","op":"relu","inputs":["conv2d"],"attrs":{}},"outputs":["linear"]}',
    '{"pipeline":{"stages":[{"name":"dense","val":,"test":,"kept":,"total":,"bits":"32",',
    '"seconds":0.0},{"name":"prune 1/4","val":,"test":null,',
    '{"name":"share (linear)",{"name":"share + fine-tune","val":,"test":],',
    '"init":"linear","seed":0,"val":5000,"shapes":{"conv2":[[,"fc1":[[,"fc2":[[,"fc3":[[,',
    '"bits":{"fc":5,"conv":8},"keep":{"fc1":0.0,',
    '"plan":{"layers":{"conv1.weight":{"keep":1.0,"bits":5},"conv2.weight":{"keep":0.,"bits":3},',
    '"fc1.weight":{"keep":0.0,"bits":2},"fc2.weight":{"keep":0.,"bits":4},',
    '"fc3.weight":{"keep":0.,"bits":8}},"budget":{"max_drop":0.5},"seed":0}}}',
    '{"t":[["fc1.weight","float32",[,"ac_shared",{"sp":1,"cm":0,"pp":,"vc":2,"sc":1,"sh":8,',
    '"k":32,"neg":16}],["fc1.bias","float32",[,"ac_float",{"sh":7}],',
    '["fc2.weight","float32",[,"ac_shared",{"sp":1,"cm":0,"vc":0,"sc":1,"sh":7,"k":16,"neg":8}],',
    '["fc2.bias","float32",[,"ac_float",{"sh":5}],',
    '["fc3.weight","float32",[,"ac_shared",{"sp":1,"cm":1,"vc":0,"sc":0,"sh":7,"k":,"neg":}],',
    '["fc3.bias","float32",[10],"raw",40]],"c":,',
    '"g":{"format":"deepcomp-graph","version":1,"inputs":["x"],"input_shape":null,"nodes":[',
    '{"name":"flatten","op":"flatten","inputs":["x"],"attrs":{"start_dim":1,"end_dim":-1}},',
    '{"name":"fc1","op":"linear","inputs":["flatten"],"attrs":{"weight":"fc1.weight",',
    '"bias":"fc1.bias","in_features":,"out_features":}},',
    '{"name":"relu","op":"relu","inputs":["fc1"],"attrs":{}},{"name":"fc2","op":"linear",',
    '"inputs":["relu"],"attrs":{"weight":"fc2.weight","bias":"fc2.bias","in_features":,',
    '"out_features":}},{"name":"relu_1","op":"relu","inputs":["fc2"],"attrs":{}},',
    '{"name":"fc3","op":"linear","inputs":["relu_1"],"attrs":{"weight":"fc3.weight",',
    '"bias":"fc3.bias","in_features":,"out_features":10}}],"outputs":["fc3"]},"m":',
)

HEADER_DICT = "".join(FRAGMENTS).encode("ascii")

# Dictionary 2 (prefix flag 2) is dictionary 1 followed by these: a LeNet-5 header (the
# module-level graph torch.fx writes for a conv net, its table, a planned run's meta with
# its float snapping), which dictionary 1 covers only in part (a planned LeNet-5 file's
# header: about 400 -> 230 bytes). Nearest the end, so the cheapest to point at.
FRAGMENTS_2 = (
    '{"name":"snap 0.0001","val":,"test":}],"snap":0.0001}',
    '"shapes":{"conv2":[[50,20,5,5],[,20,5,5]],"fc1":[[500,800],[,"fc2":[[10,500],[10,',
    '"plan":{"layers":{"conv1.weight":{"keep":0.,"bits":},"conv2.weight":{"keep":0.0,',
    '"bits":},"fc1.weight":{"keep":0.0,"bits":2},"fc2.weight":{"keep":0.,"bits":}},',
    '"budget":{"max_drop":0.5},"seed":}}',
    '{"t":[["conv1.weight","float32",[20,1,5,5],"ac_shared",{"sp":1,"cm":,"vc":0,"sc":0,',
    '"sh":7,"k":,"neg":}],["conv1.bias","float32",[20],"ac_float",{"sh":5}],',
    '["conv2.weight","float32",[,20,5,5],"ac_shared",{"sp":1,"cm":0,"pp":5,"vc":0,"sc":0,',
    '"sh":,"k":,"neg":}],["conv2.bias","float32",[],"ac_float",{"sh":5}],',
    '["fc1.weight","float32",[,"ac_shared",{"sp":1,"cm":0,"vc":0,"sc":1,"sh":9,"k":4,"neg":2}],',
    '["fc1.bias","float32",[,"ac_float",{"sh":7}],["fc2.weight","float32",[10,],"ac_shared",',
    '{"sp":1,"cm":1,"vc":0,"sc":0,"sh":7,"k":,"neg":}],["fc2.bias","float32",[10],"ac_float",',
    '{"sh":5}]],"c":',
    '"g":{"format":"deepcomp-graph","version":1,"inputs":["x"],"input_shape":[null,1,28,28],',
    '"nodes":[{"name":"conv2d","op":"conv2d","inputs":["x"],"attrs":{"weight":"conv1.weight",',
    '"bias":"conv1.bias","in_channels":1,"out_channels":20,"kernel_size":[5,5],',
    '"stride":[1,1],"padding":[0,0],"dilation":[1,1],"groups":1}},{"name":"relu","op":"relu",',
    '"inputs":["conv2d"],"attrs":{}},{"name":"max_pool2d","op":"max_pool2d","inputs":["relu"],',
    '"attrs":{"kernel_size":[2,2],"stride":[2,2],"padding":[0,0],"dilation":[1,1],',
    '"ceil_mode":false}},{"name":"conv2d_1","op":"conv2d","inputs":["max_pool2d"],',
    '"attrs":{"weight":"conv2.weight","bias":"conv2.bias","in_channels":20,"out_channels":,',
    '"kernel_size":[5,5],"stride":[1,1],"padding":[0,0],"dilation":[1,1],"groups":1}},',
    '{"name":"relu_1","op":"relu","inputs":["conv2d_1"],"attrs":{}},{"name":"max_pool2d_1",',
    '"op":"max_pool2d","inputs":["relu_1"],"attrs":{"kernel_size":[2,2],"stride":[2,2],',
    '"padding":[0,0],"dilation":[1,1],"ceil_mode":false}},{"name":"flatten","op":"flatten",',
    '"inputs":["max_pool2d_1"],"attrs":{"start_dim":1,"end_dim":-1}},{"name":"linear",',
    '"op":"linear","inputs":["flatten"],"attrs":{"weight":"fc1.weight","bias":"fc1.bias",',
    '"in_features":,"out_features":}},{"name":"relu_2","op":"relu","inputs":["linear"],',
    '"attrs":{}},{"name":"linear_1","op":"linear","inputs":["relu_2"],"attrs":{',
    '"weight":"fc2.weight","bias":"fc2.bias","in_features":,"out_features":10}}],',
    '"outputs":["linear_1"]},"m":{"pipeline":{"stages":[{"name":"dense","val":,"test":},',
)

HEADER_DICT_2 = HEADER_DICT + "".join(FRAGMENTS_2).encode("ascii")
